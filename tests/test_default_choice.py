"""The default is chosen on train splits alone; the test splits are read once, after the choice."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from hybridgate.classifiers import sources as sources_mod
from hybridgate.classifiers.default_choice import (
    DEFAULT,
    Choice,
    choose_default,
    inner_split,
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

    choice = choose_default(two_sources, {"learnt": learns}, {DEFAULT: _reversed}, {"length": _length})
    by = {s.name: s for s in two_sources}
    inner_rows, final_rows = seen
    assert all(not (m & ~by[k].train).any() for k, m in inner_rows.items())  # the selection's fit: train rows only
    assert all((m == by[k].train).all() for k, m in final_rows.items())  # then every train split
    assert choice.winner == "learnt" and "length" in choice.selection and "length" in choice.test
    assert choice.selection["learnt"]["mean"] > choice.selection[DEFAULT]["mean"]
    assert choice.verdict()["replaces_default"]


def test_a_failed_gate_keeps_the_default_and_says_by_how_much() -> None:
    sel = {"new": {"mean": 0.62}, DEFAULT: {"mean": 0.60}}
    choice = Choice(sel, "new", {}, {"MMLU in-distribution": (0.57, 0.64)})
    v = choice.verdict()
    assert not v["replaces_default"] and "short by 0.0700" in v["failed"]["MMLU in-distribution"]
    assert Choice(sel, DEFAULT, {}).verdict()["replaces_default"] is False


def test_ranking_guard_is_the_share_of_hard_easy_pairs_in_order() -> None:
    hard = np.array([True, True, False, False])
    assert ranking_guard(np.array([0.9, 0.1, 0.5, 0.0]), hard) == 0.75


def test_a_fixed_router_is_not_chosen_on_the_source_it_was_fitted_on(two_sources: list[Source]) -> None:
    def by_source(good):
        return lambda src, idx, pair: _length(src, idx, pair) * (1 if src.name == good else -1)
    choice = choose_default(two_sources, {"learnt": lambda rows: by_source("puzzles")}, {DEFAULT: by_source("chat")},
                            seen={DEFAULT: ["chat"]})
    assert choice.fair == ("puzzles",) and choice.winner == "learnt"
    assert choice.selection[DEFAULT]["sources"]["chat"] > choice.selection["learnt"]["sources"]["chat"]


def test_a_limit_exceeded_keeps_the_default_and_says_by_how_much() -> None:
    sel = {"new": {"mean": 0.62}, DEFAULT: {"mean": 0.60}}
    slow = Choice(sel, "new", {}, {"guard": (0.95, 0.91)}, limits={"decision p50 ms": (12.5, 10.0)})
    v = slow.verdict()
    assert not v["replaces_default"] and list(v["failed"]) == ["decision p50 ms"] and "over by 2.5000" in v["failed"]["decision p50 ms"]
    assert Choice(sel, "new", {}, {"guard": (0.95, 0.91)}, limits={"decision p50 ms": (4.0, 10.0)}).verdict()["replaces_default"]
