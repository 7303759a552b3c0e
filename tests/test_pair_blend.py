"""The pair-blend head: blend-static's signals from several sources plus the configured pair's expected gain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hybridgate.classifiers import sources as sources_mod
from hybridgate.classifiers.artifact import SHIPPED, load_router, save_router
from hybridgate.classifiers.default_choice import _mmlu_training
from hybridgate.classifiers.embedder import Embedder
from hybridgate.classifiers.model import RouterModel
from hybridgate.classifiers.outcome_head import for_pair
from hybridgate.classifiers.outcome_router import query_inputs
from hybridgate.classifiers.pair_blend_head import PairBlendHead
from hybridgate.classifiers.pair_blend_train import PairBlendLearner, pair_scores, training_set, weighted
from hybridgate.classifiers.sources import Source
from tests.frozen_slice import recompute_claim

DIM = 8
WORDS = ("prove the theorem step by step", "hello there", "write a poem about", "what is the capital of", "solve 3x + 4 = 19")


@pytest.fixture(scope="module")
def fitted() -> tuple[PairBlendHead, list[Source], dict[str, np.ndarray]]:
    """Two sources of different base gains (the second's cloud gains more everywhere), three models."""
    rng = np.random.default_rng(0)
    out, inputs, vectors = [], {}, {}
    patch = pytest.MonkeyPatch()
    for s, (name, base) in enumerate((("chat", 0.0), ("puzzles", 0.4))):
        n = 240
        kind = rng.integers(0, len(WORDS), n)
        prompts = tuple(f"{WORDS[k]} {name} {i} " + "more words " * int(kind[i]) for i, k in enumerate(kind))
        hard = kind / (len(WORDS) - 1)
        weak = (rng.random(n) > hard).astype(float)
        strong = np.maximum(weak, (rng.random(n) < base + 0.5 * hard).astype(float))
        mid = np.maximum(weak, (rng.random(n) < 0.3 * hard).astype(float))
        src = Source(name, prompts, tuple(f"g{k}" for k in kind), ("w", "m", "s"), np.column_stack([weak, mid, strong]), 0.5)
        patch.setitem(sources_mod.PAIRS, name, (("w", "s"),))
        centres = np.random.default_rng(s).normal(size=(len(WORDS), DIM))
        vec = centres[kind] + 0.3 * rng.normal(size=(n, DIM))
        vec /= np.linalg.norm(vec, axis=1, keepdims=True)
        vectors[name] = vec
        inputs[name] = query_inputs(vec, list(prompts))
        out.append(src)
    learner = PairBlendLearner(out, inputs, vectors, {"dim": 2, "steps": 60}, {"centroids_k": 4})
    head = learner.fit({s.name: s.train for s in out})
    yield head, out, inputs
    patch.undo()


def test_targets_are_centred_within_each_source(fitted: tuple[PairBlendHead, list[Source], dict[str, np.ndarray]]) -> None:
    _, srcs, inputs = fitted
    data = training_set(srcs, inputs, {s.name: s.train for s in srcs})
    for s in srcs:
        mine = np.array([g.startswith(f"{s.name}:") for g in data.groups])
        assert mine.sum() == s.train.sum() and abs(float(data.gain[mine].mean())) < 1e-9
    # Uncentred, the second source's rows would all look like gain: the neighbours would learn the source.
    assert float(np.mean(srcs[1].column("s")[srcs[1].train] - srcs[1].column("w")[srcs[1].train])) > 0.3


def test_a_known_pair_adds_its_gain_and_the_catalogue_free_router_is_the_pair_free_part(
    fitted: tuple[PairBlendHead, list[Source], dict[str, np.ndarray]],
) -> None:
    head, srcs, inputs = fitted
    x = inputs["chat"][:50].astype(np.float32)
    free = head.with_pair(None, None)
    assert "pair gain" not in free.terms(x)
    no_gain = weighted(free, w_gain=0.0)
    np.testing.assert_allclose(free.score(x), no_gain.score(x), atol=1e-6)
    known = head.with_pair("w", "s")
    assert "pair gain" in known.terms(x) and known.pair()[1].origin == "catalogue"
    assert not np.allclose(known.score(x), free.score(x))
    # The local model known is enough (the cloud gets the prior ability); the cloud alone is not: the gain of a
    # prior local ability ranks backwards, so an unknown local model scores the pair-free part until it is learnt.
    half = head.with_pair("w", "an-unknown-cloud")
    assert "pair gain" in half.terms(x) and half.pair()[1].origin == "prior"
    unknown_local = head.with_pair("SmolLM2-135M-Instruct", "s")
    assert "pair gain" not in unknown_local.terms(x) and unknown_local.pair()[0].origin == "prior"
    np.testing.assert_array_equal(unknown_local.score(x), free.score(x))
    learnt = unknown_local.with_local(head.with_pair("w", "s").pair()[0])  # as if its labels had taught it w's ability
    assert "pair gain" in learnt.terms(x)
    np.testing.assert_allclose(learnt.score(x), known.score(x), atol=1e-6)
    np.testing.assert_allclose(pair_scores(head, x, ("w", "s")), known.score(x), atol=1e-6)


def test_saved_and_loaded_it_scores_the_same_and_explains_abilities_and_signals(
    fitted: tuple[PairBlendHead, list[Source], dict[str, np.ndarray]], tmp_path: Path,
) -> None:
    head, srcs, inputs = fitted
    x = inputs["puzzles"][:40].astype(np.float32)
    save_router(RouterModel(head, "toy", DIM, features=False), tmp_path / "r", name="pair-blend-toy")
    again = load_router(tmp_path / "r")
    assert isinstance(again.head, PairBlendHead)
    np.testing.assert_allclose(again.head.score(x), head.score(x), atol=1e-4)
    paired = for_pair(again, "w", "s")
    assert isinstance(paired.head, PairBlendHead)
    np.testing.assert_allclose(paired.head.score(x), head.with_pair("w", "s").score(x), atol=1e-4)
    score, pushes = paired.score_explained(x[:1])
    assert 0.0 <= score <= 1.0 and "pair gain" in dict(pushes)
    assert "local w: catalogue" in paired.head.describe_pair() and "cloud s: catalogue" in paired.head.describe_pair()
    with np.load(tmp_path / "r" / "arrays.npz", allow_pickle=False) as npz:
        assert all(npz[k].dtype != object for k in npz.files)


def test_mmlu_gates_train_on_no_row_that_shares_mmlus_questions() -> None:
    def src(name: str, groups: list[str]) -> Source:
        prompts = tuple(f"{name} {i}" for i in range(len(groups)))
        return Source(name, prompts, tuple(groups), ("a",), np.zeros((len(groups), 1)), 0.5)

    mmlu = src("routellm-mmlu", ["algebra"] * 20)
    sources = [mmlu, src("mmlu-pro", ["law"] * 20), src("llmrouter", ["mmlu", "gsm8k"] * 10), src("alpacaeval", ["oasst"] * 20)]
    keep = mmlu.train & (np.arange(20) % 2 == 0)
    rows = _mmlu_training(sources, keep)
    assert "mmlu-pro" not in rows and (rows["routellm-mmlu"] == keep).all()
    llm = sources[2]
    assert not (rows["llmrouter"] & llm.mmlu_rows).any() and (rows["llmrouter"] == (llm.train & ~llm.mmlu_rows)).all()
    assert (rows["alpacaeval"] == sources[3].train).all()


SHIPPED_PAIR_BLEND = SHIPPED / "pair-blend-static"
needs_shipped = pytest.mark.skipif(not (SHIPPED_PAIR_BLEND / "router.json").is_file(), reason="pair-blend-static is not shipped here")


@needs_shipped
def test_shipped_pair_blend_router_scores_its_frozen_slice_as_its_header_claims(query_embedder: Embedder) -> None:
    """The header's APGR on 150 frozen test rows of llmrouter (tests/fixtures/across), recomputed for its pair."""
    header, _, got = recompute_claim(SHIPPED_PAIR_BLEND, query_embedder)
    assert got == pytest.approx(header["claims"]["frozen_slice"]["apgr"], abs=2e-3)
    assert set(header["trained_on"]) == {"routellm-mmlu", "mmlu-pro", "alpacaeval", "llmrouter"}


@needs_shipped
def test_shipped_pair_blend_names_the_abilities_and_the_signals_that_moved_the_score(query_embedder: Embedder) -> None:
    from hybridgate.router.classifier_scorer import ClassifierScorer
    from hybridgate.router.decision import RouteQuery

    loaded = load_router(SHIPPED_PAIR_BLEND, embedder=query_embedder.name, dim=query_embedder.dim)
    known = ClassifierScorer(for_pair(loaded, "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4o-2024-05-13"), query_embedder)
    assert "local mistralai/Mixtral-8x7B-Instruct-v0.1: catalogue" in known.name and "cloud gpt-4o-2024-05-13: catalogue" in known.name
    query = RouteQuery("Prove that the square root of 2 is irrational, step by step, then generalise to any prime.", 20, 1)
    score, signals = known.score_explained(query)
    assert 0.0 <= score <= 1.0 and signals
    _, pushes = known.model.score_explained(known.model.inputs(query_embedder.encode([query.text]), [query.text]))
    assert "pair gain" in dict(pushes) and "length" in dict(pushes)
    free = ClassifierScorer(for_pair(load_router(SHIPPED_PAIR_BLEND), "SmolLM2-135M-Instruct", None), query_embedder)
    assert "local SmolLM2-135M-Instruct: prior" in free.name and "cloud cloud: prior" in free.name
    assert all(s.name != "pair gain" for s in free.score_explained(query)[1])
