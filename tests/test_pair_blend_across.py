"""The pair-blend head under the across-sources protocols (classifiers/pair_blend_across.py), on small sources."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from hybridgate.classifiers import across_sources as protocols
from hybridgate.classifiers import sources as sources_mod
from hybridgate.classifiers.across_sources import first_train_rows, run_all, training_rows
from hybridgate.classifiers.outcome_router import query_inputs
from hybridgate.classifiers.pair_blend_across import MmluBlendAcross, PairBlendAcross
from hybridgate.classifiers.pair_blend_head import PairBlendHead
from hybridgate.classifiers.pair_blend_mmlu import MmluBlendHead
from hybridgate.classifiers.pair_blend_train import PairBlendLearner, training_set
from hybridgate.classifiers.sources import Source

DIM = 8
WORDS = ("prove the theorem step by step", "hello there", "write a poem about", "what is the capital of", "solve 3x + 4 = 19")
Toy = tuple[PairBlendLearner, list[Source]]


@pytest.fixture(scope="module")
def toy() -> Iterator[Toy]:
    """Three sources, models w (weak), m and s (strong); the weak model fails the harder kinds of query."""
    rng = np.random.default_rng(1)
    out, inputs, vectors = [], {}, {}
    patch = pytest.MonkeyPatch()
    for s, name in enumerate(("chat", "puzzles", "code")):
        n = 200
        kind = rng.integers(0, len(WORDS), n)
        prompts = tuple(f"{WORDS[k]} {name} {i} " + "more words " * int(kind[i]) for i, k in enumerate(kind))
        hard = kind / (len(WORDS) - 1)
        weak = (rng.random(n) > hard).astype(float)
        mid = np.maximum(weak, (rng.random(n) < 0.4 * hard).astype(float))
        strong = np.maximum(mid, (rng.random(n) < 0.7 * hard).astype(float))
        out.append(Source(name, prompts, tuple(f"g{k}" for k in kind), ("w", "m", "s"), np.column_stack([weak, mid, strong]), 0.5))
        patch.setitem(sources_mod.PAIRS, name, (("w", "s"), ("m", "s")))
        patch.setitem(sources_mod.NEW_MODEL_PAIRS, name, ("w", "s"))
        centres = np.random.default_rng(s).normal(size=(len(WORDS), DIM))
        vec = centres[kind] + 0.3 * rng.normal(size=(n, DIM))
        vectors[name] = vec / np.linalg.norm(vec, axis=1, keepdims=True)
        inputs[name] = query_inputs(vectors[name], list(prompts))
    yield PairBlendLearner(out, inputs, vectors, {"dim": 2, "steps": 60}, {"centroids_k": 4}), out
    patch.undo()


def test_a_hidden_model_reaches_neither_the_outcome_model_nor_the_blend_parts_gain(toy: Toy) -> None:
    learner, srcs = toy
    rows = {s.name: s.train for s in srcs}
    across = PairBlendAcross(learner, {"w_gain": 1.0})
    fitted = across.fit(rows, frozenset({"w"}))
    assert fitted.head.with_pair("w", "s").pair()[0].origin == "prior"
    assert across.fit(rows, frozenset()).head.with_pair("w", "s").pair()[0].origin == "catalogue"
    # The blend part's target is the gain of the pairs without w: m -> s alone.
    data = training_set(srcs, learner.inputs, rows, frozenset({"w"}))
    chat = srcs[0]
    mine = np.array([g.startswith("chat:") for g in data.groups])
    want = (chat.column("s") - chat.column("m"))[chat.train]
    np.testing.assert_allclose(data.gain[mine], want - want.mean(), atol=1e-9)


def test_labels_reach_the_head_as_a_gateways_do_and_every_protocol_reports(toy: Toy) -> None:
    learner, srcs = toy
    across = PairBlendAcross(learner, {"w_gain": 1.0, "w_length": 2.0, "w_topic": 2.0}, name="pair-blend toy")
    report = run_all(srcs, across, lambda texts: np.array([len(t) for t in texts], dtype=np.float64), ns=(0, 100)).row()
    for n in ("0", "100"):
        assert set(report["leave_one_source_out"][n]["sources"]) == {"chat", "puzzles", "code"}
    assert set(report["in_source"]["sources"]) == {"chat", "puzzles", "code"}
    assert {"0", "100", "all"} <= set(report["new_model"]["chat"])
    # New model: the weak model's ability is learnt from its labels (it fails hard queries far more than the prior).
    assert any(": ability adopted" in line for line in across.log)
    # New traffic: labels go through the held-out-validated Adapter; with 100 labels it is judged on every pair.
    assert sum(("adopted (" in line or ": kept" in line) for line in across.log) == 6
    # With labels the new-model scores move; with none they are the head's own.
    src = srcs[0]
    fitted = across.fit(training_rows(srcs, "chat", leave_out=False), frozenset({"w"}))
    idx = protocols.test_rows(src, ("w", "s"))
    none = fitted.score("chat", idx, ("w", "s"), np.zeros(0, dtype=int), seen_source=True)
    some = fitted.score("chat", idx, ("w", "s"), np.nonzero(src.train)[0], seen_source=True)
    assert not np.allclose(none, some)
    np.testing.assert_allclose(none, fitted.head.with_pair("w", "s").score(learner.inputs["chat"][idx].astype(np.float32)))
    assert len(first_train_rows(src, 100)) == 100


def test_the_defaults_recipe_adds_its_mmlu_part_and_without_its_rows_is_the_pair_blend_part_alone(toy: Toy) -> None:
    """The default's recipe with "puzzles" standing for routellm-mmlu: its MMLU part is fitted on the training rows'
    puzzles rows; with none (puzzles scored, so left out) the head is the pair-blend part at the same weights,
    undamped on multiple choice, not a head that scores every exam question alike."""
    learner, srcs = toy
    weights = {"w_gain": 8.0, "w_length": 2.0, "w_topic": 2.0}
    fits: dict[bytes, PairBlendHead] = {}
    default = MmluBlendAcross(learner, weights, mmlu_source="puzzles", mmlu_pair=("m", "s"), part_settings={"centroids_k": 4}, fits=fits)
    plain = PairBlendAcross(learner, weights, fits=fits)
    none = np.zeros(0, dtype=int)
    chat, puzzles = srcs[0], srcs[1]
    rows = training_rows(srcs, "chat", leave_out=True)
    head = default.fit(rows, frozenset()).head
    assert isinstance(head, MmluBlendHead) and (head.w_mmlu, head.w_choice, head.w_gain) == (0.25, 0.0, 8.0)
    assert (head.mmlu.w_length, head.mmlu.w_neighbours, head.mmlu.w_topic, head.mmlu.w_rules) == (1.0, 1.0, 2.0, 2.0)
    assert len(head.mmlu.neighbours.memory) == int(puzzles.train.sum() + (~puzzles.train).sum())  # every puzzles row (chat left out)
    idx = protocols.test_rows(chat, ("w", "s"))
    with_part = default.fit(rows, frozenset()).score("chat", idx, ("w", "s"), none, seen_source=False)
    without = plain.fit(rows, frozenset()).score("chat", idx, ("w", "s"), none, seen_source=False)
    assert not np.allclose(with_part, without)
    # New model: the labels reach the local ability through the default's head too (its pair-blend part).
    fitted = default.fit(training_rows(srcs, "chat", leave_out=False), frozenset({"w"}))
    assert isinstance(fitted.head, MmluBlendHead)
    some = fitted.score("chat", idx, ("w", "s"), np.nonzero(chat.train)[0], seen_source=True)
    assert not np.allclose(some, fitted.score("chat", idx, ("w", "s"), none, seen_source=True))
    # Puzzles left out: no MMLU rows, so the pair-blend part alone, and the log says so.
    rows = training_rows(srcs, "puzzles", leave_out=True)
    alone = default.fit(rows, frozenset())
    assert not isinstance(alone.head, MmluBlendHead)
    assert any("no puzzles rows, the pair-blend part alone" in line for line in default.log)
    idx = protocols.test_rows(puzzles, ("w", "s"))
    np.testing.assert_allclose(alone.score("puzzles", idx, ("w", "s"), none, seen_source=False),
                               plain.fit(rows, frozenset()).score("puzzles", idx, ("w", "s"), none, seen_source=False))
    exam = [f"Which {w} is right?\nA. one\nB. two {i}\nC. three\nD. four" for i, w in enumerate(WORDS)]
    vec = np.random.default_rng(3).normal(size=(len(exam), DIM))
    scores = alone.head.with_pair("w", "s").score(query_inputs(vec / np.linalg.norm(vec, axis=1, keepdims=True), exam).astype(np.float32))
    assert np.ptp(scores) > 0
    # A model of the MMLU pair hidden: its gain cannot be read, the same fallback.
    assert not isinstance(default.fit(training_rows(srcs, "chat", leave_out=True), frozenset({"m"})).head, MmluBlendHead)
