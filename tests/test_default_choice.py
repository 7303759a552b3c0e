"""The default is chosen on train splits alone; the test splits are read once, after the choice."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from hybridgate.classifiers import sources as sources_mod
from hybridgate.classifiers.default_choice import (
    PAIR_MMLU,
    REFERENCE,
    Choice,
    choose_default,
    inner_mmlu_gates,
    inner_split,
    meets,
    ranking_guard,
)
from hybridgate.classifiers.sources import Source


@pytest.fixture
def two_sources(monkeypatch: pytest.MonkeyPatch) -> list[Source]:
    rng = np.random.default_rng(0)
    out = []
    for name in ("chat", "puzzles"):
        n = 400
        hard = rng.random(n)
        weak = (rng.random(n) > hard).astype(float)
        strong = np.maximum(weak, (rng.random(n) > hard / 3).astype(float))
        prompts = tuple(f"{name} question {i} " + "word " * int(1 + 30 * h) for i, h in enumerate(hard))
        out.append(Source(name, prompts, tuple("g" for _ in prompts), ("w", "s"), np.column_stack([weak, strong]), 0.5))
    monkeypatch.setitem(sources_mod.PAIRS, "chat", (("w", "s"),))
    monkeypatch.setitem(sources_mod.PAIRS, "puzzles", (("w", "s"),))
    return out


def _length(src: Source, idx: np.ndarray, pair: Any) -> np.ndarray:
    return np.array([len(src.prompts[i]) for i in idx], dtype=np.float64)


def _reversed(src: Source, idx: np.ndarray, pair: Any) -> np.ndarray:
    return -_length(src, idx, pair)


def test_inner_split_cuts_the_train_rows_only_and_both_sides_get_rows(two_sources: list[Source]) -> None:
    for src in two_sources:
        fit, val = inner_split(src)
        assert not (fit & val).any() and ((fit | val) == src.train).all()
        assert 0.5 < fit.sum() / src.train.sum() < 0.9


def test_the_choice_reads_no_test_row_and_picks_the_better_candidate(two_sources: list[Source]) -> None:
    seen: list[dict[str, np.ndarray]] = []

    def learns(rows: dict[str, np.ndarray]) -> Any:
        seen.append(rows)
        return _length

    choice = choose_default(two_sources, {"learnt": learns}, {REFERENCE: _reversed}, {"length": _length})
    by = {s.name: s for s in two_sources}
    inner_rows, final_rows = seen
    assert all(not (m & ~by[k].train).any() for k, m in inner_rows.items())  # the selection's fit: train rows only
    assert all((m == by[k].train).all() for k, m in final_rows.items())  # then every train split
    assert choice.winner == "learnt" and "length" in choice.selection and "length" in choice.test
    assert choice.selection["learnt"]["mean"] > choice.selection[REFERENCE]["mean"]
    assert choice.verdict()["replaces_default"]


def test_a_failed_gate_keeps_the_default_and_says_by_how_much() -> None:
    sel = {"new": {"mean": 0.62}, REFERENCE: {"mean": 0.60}}
    choice = Choice(sel, "new", {}, {"MMLU in-distribution": (0.57, 0.64)})
    v = choice.verdict()
    assert not v["replaces_default"] and "short by 0.0700" in v["failed"]["MMLU in-distribution"]
    assert Choice(sel, REFERENCE, {}).verdict()["replaces_default"] is False


def test_ranking_guard_is_the_share_of_hard_easy_pairs_in_order() -> None:
    hard = np.array([True, True, False, False])
    assert ranking_guard(np.array([0.9, 0.1, 0.5, 0.0]), hard) == 0.75


def test_a_fixed_router_is_not_chosen_on_the_source_it_was_fitted_on(two_sources: list[Source]) -> None:
    def by_source(good):
        return lambda src, idx, pair: _length(src, idx, pair) * (1 if src.name == good else -1)
    choice = choose_default(two_sources, {"learnt": lambda rows: by_source("puzzles")}, {REFERENCE: by_source("chat")},
                            seen={REFERENCE: ["chat"]})
    assert choice.fair == ("puzzles",) and choice.winner == "learnt"
    assert choice.selection[REFERENCE]["sources"]["chat"] > choice.selection["learnt"]["sources"]["chat"]


def test_a_limit_exceeded_keeps_the_default_and_says_by_how_much() -> None:
    sel = {"new": {"mean": 0.62}, REFERENCE: {"mean": 0.60}}
    slow = Choice(sel, "new", {}, {"guard": (0.95, 0.91)}, limits={"decision p50 ms": (12.5, 10.0)})
    v = slow.verdict()
    assert not v["replaces_default"] and list(v["failed"]) == ["decision p50 ms"] and "over by 2.5000" in v["failed"]["decision p50 ms"]
    assert Choice(sel, "new", {}, {"guard": (0.95, 0.91)}, limits={"decision p50 ms": (4.0, 10.0)}).verdict()["replaces_default"]


# -- MMLU in the selection: a candidate must reach the default's recipe on the inner MMLU gates -----------------

def _sources_with_mmlu(rng: np.random.Generator) -> list[Source]:
    """routellm-mmlu (20 subjects, so every subject fold has rows) and one chat source; harder rows are longer."""
    out = []
    for name, pair in (("routellm-mmlu", PAIR_MMLU), ("chat", ("w", "s"))):
        n = 600
        hard = rng.random(n)
        weak = (rng.random(n) > hard).astype(float)
        strong = np.maximum(weak, (rng.random(n) > hard / 3).astype(float))
        prompts = tuple(f"{name} question {i} " + "word " * int(1 + 30 * h) for i, h in enumerate(hard))
        out.append(Source(name, prompts, tuple(f"subject{i % 20}" for i in range(n)), pair, np.column_stack([weak, strong]), 0.5))
    return out


@pytest.fixture
def mmlu_and_chat(monkeypatch: pytest.MonkeyPatch) -> list[Source]:
    monkeypatch.setitem(sources_mod.PAIRS, "chat", (("w", "s"),))
    return _sources_with_mmlu(np.random.default_rng(1))


def _on(good: str, bad: str):  # type: ignore[no-untyped-def]
    """A scorer that ranks by length on ``good``, backwards on ``bad`` (if any), by chance elsewhere."""
    def score(src: Source, idx: np.ndarray, pair: Any) -> np.ndarray:
        if src.name == good:
            return _length(src, idx, pair)
        if src.name == bad:
            return -_length(src, idx, pair)
        return np.random.default_rng(len(idx)).random(len(idx))
    return score


def test_inner_mmlu_gates_fit_and_score_train_rows_only(mmlu_and_chat: list[Source]) -> None:
    fitted_on: list[dict[str, np.ndarray]] = []
    scored: list[np.ndarray] = []

    def make(rows: dict[str, np.ndarray]) -> Any:
        fitted_on.append(rows)

        def score(src: Source, idx: np.ndarray, pair: Any) -> np.ndarray:
            scored.append(idx)
            return _length(src, idx, pair)
        return score

    got = inner_mmlu_gates(mmlu_and_chat, make)
    mmlu = mmlu_and_chat[0]
    assert set(got) == {"in_distribution", "transfer"} and len(fitted_on) == 1 + 5
    assert all(not (rows["routellm-mmlu"] & ~mmlu.train).any() for rows in fitted_on)
    assert all(mmlu.train[idx].all() for idx in scored)
    fit, val = inner_split(mmlu)
    assert not (fitted_on[0]["routellm-mmlu"] & val).any()  # in-distribution: fitted on inner-train, scored on inner-validation


def test_a_candidate_below_the_default_recipe_on_mmlu_cannot_win(mmlu_and_chat: list[Source]) -> None:
    candidates = {"mmlu-poor": lambda rows: _on("chat", "routellm-mmlu"), "steady": lambda rows: _on("routellm-mmlu", "")}
    fixed = {REFERENCE: _on("routellm-mmlu", "chat")}
    seen = {REFERENCE: ["routellm-mmlu"]}
    free = choose_default(mmlu_and_chat, candidates, fixed, seen=seen)
    assert free.winner == "mmlu-poor"  # without the bar, the better fair mean wins
    gated = choose_default(mmlu_and_chat, candidates, fixed, seen=seen, bar=lambda rows: _length)
    assert gated.selection["mmlu-poor"]["fair_mean"] > gated.selection["steady"]["fair_mean"]
    assert gated.selection["mmlu-poor"]["eligible"] is False and gated.selection["steady"]["eligible"] is True
    assert gated.winner == "steady" and gated.bar == gated.selection["steady"]["inner_mmlu"]
    assert gated.as_dict()["inner_mmlu_bar"] == gated.bar


def test_with_no_candidate_eligible_the_default_stays_and_says_why(mmlu_and_chat: list[Source]) -> None:
    choice = choose_default(mmlu_and_chat, {"mmlu-poor": lambda rows: _on("chat", "routellm-mmlu")}, {REFERENCE: _on("routellm-mmlu", "chat")},
                            seen={REFERENCE: ["routellm-mmlu"]}, bar=lambda rows: _length)
    v = choice.verdict()
    assert choice.winner == REFERENCE and not v["replaces_default"] and "inner MMLU gates" in v["failed"]["selection"]


def test_meets_is_at_least_the_bar_on_every_gate() -> None:
    bar = {"in_distribution": 0.60, "transfer": 0.58}
    assert meets({"in_distribution": 0.60, "transfer": 0.59}, bar)
    assert not meets({"in_distribution": 0.70, "transfer": 0.5799}, bar)
