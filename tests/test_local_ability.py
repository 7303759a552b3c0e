"""An unknown local model's ability, learnt on the gateway from its own labels (issue 22, point 3).

Labels are made here from a known ability (each label is "the cloud was needed", so the local model's outcome
is 1 - label) on real query vectors and shape features; the routers are the shipped ``across-static`` (an
outcomes head, no cloud named) and ``pair-blend-static`` (the pair-blend head, the cloud a catalogue model):
every head that is ``LearnsLocal`` learns the same way. Until the ability is learnt, ``pair-blend-static``
scores an unknown local model with its pair-free part, exactly.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybridgate.classifiers.adapt import Adapter
from hybridgate.classifiers.artifact import load_router
from hybridgate.classifiers.embedder import Embedder
from hybridgate.classifiers.model import RouterModel
from hybridgate.classifiers.outcome_head import LearnsLocal, for_pair
from hybridgate.classifiers.pair_blend_head import PairBlendHead
from hybridgate.classifiers.pair_score import Ability, success
from hybridgate.router import RouteQuery, RoutingPolicy
from hybridgate.router.classifier_scorer import ClassifierScorer
from hybridgate.router.decision import Route, RouteContext
from hybridgate.serving.router_adapt import RouterAdapter, _held_out, label_inputs
from hybridgate.serving.state.memory import MemoryStore

ACROSS = Path(__file__).resolve().parents[1] / "classifiers" / "routers" / "across-static"
PAIR_BLEND = ACROSS.parent / "pair-blend-static"
pytestmark = pytest.mark.skipif(not (ACROSS / "router.json").is_file(), reason="the across-static router is not shipped in this checkout")
LOCAL = "SmolLM2-135M-Instruct"
CLOUD = "gpt-4o-2024-05-13"  # in pair-blend-static's catalogue: the gain term is the cloud's known ability against the local's
needs_pair_blend = pytest.mark.skipif(not (PAIR_BLEND / "router.json").is_file(), reason="pair-blend-static is not shipped in this checkout")
# (router, cloud model) of each head that learns a local ability: the tests below hold for every one.
SETUPS = [pytest.param((ACROSS, None), id="across-static"), pytest.param((PAIR_BLEND, CLOUD), id="pair-blend-static", marks=needs_pair_blend)]
ASKS = ["How do I {} in Python?", "Explain {} to a ten-year-old.", "Write a short poem about {}.", "What is the history of {}?",
        "Solve step by step: a train covers {} km in 3 hours; what is its speed?", "Give me three tips to {}."]
THINGS = ["sort a list", "photosynthesis", "the moon", "Roman roads", "240", "sleep better", "read a CSV file", "black holes",
          "autumn", "the printing press", "90", "save money", "parse JSON", "inflation", "the sea", "jazz", "150", "learn chess",
          "reverse a string", "volcanoes", "winter", "the telephone", "600", "cook rice", "merge two dicts", "tides", "cats",
          "the Silk Road", "75", "run a marathon", "open a file", "gravity", "rain"]


def _texts() -> list[str]:
    return [a.format(t) for a in ASKS for t in THINGS]


@pytest.fixture(params=SETUPS)
def router_setup(request: pytest.FixtureRequest) -> tuple[Path, str | None]:
    setup: tuple[Path, str | None] = request.param
    return setup


def _scorer(embedder: Embedder, router: Path = ACROSS, cloud: str | None = None) -> ClassifierScorer:
    model = for_pair(load_router(router, embedder=embedder.name, dim=embedder.dim), LOCAL, cloud)
    return ClassifierScorer(model, embedder)


def _cloud_named(cloud: str | None) -> str:
    return f"cloud {cloud}: catalogue" if cloud else "cloud cloud: prior"


def _label(scorer: ClassifierScorer, text: str, vec: np.ndarray, local_ok: int, i: int, **kw: Any) -> dict[str, Any]:
    row = {"ts": 1000.0 + i, "embedder": scorer.embedder.name, "vector": [float(v) for v in vec], "label": 1 - local_ok,
           "source": "shadow", "rating": None, "route": "local", "base_score": 0.5, "router_version": scorer.version,
           "inputs": label_inputs(scorer, text, 1)}
    return {**row, **kw}


def _head(scorer: ClassifierScorer) -> LearnsLocal:
    assert isinstance(scorer.model.head, LearnsLocal)
    return scorer.model.head


def _latent(scorer: ClassifierScorer, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    vecs = scorer.embedder.encode(texts)
    return vecs, _head(scorer).model.latent(scorer.model.inputs(vecs, texts, [1] * len(texts)).astype(np.float64))


async def test_the_gateway_learns_an_unknown_local_models_ability_from_its_labels(
    query_embedder: Embedder, router_setup: tuple[Path, str | None]
) -> None:
    scorer = _scorer(query_embedder, *router_setup)
    prior = _head(scorer).prior_local()
    assert prior.origin == "prior"
    truth = Ability(LOCAL, prior.offset - 2.0, prior.loadings, "test")  # far weaker than the prior says
    texts = _texts()
    vecs, u = _latent(scorer, texts)
    ok = (np.random.default_rng(7).random(len(texts)) < success(u, truth)).astype(int)
    store = MemoryStore()
    adapter = RouterAdapter(scorer, store, interval_s=3600, min_labels=40)
    for i in range(30):
        await store.add_label(_label(scorer, texts[i], vecs[i], int(ok[i]), i))
    before = scorer.model
    assert (await adapter.adapt_once()).outcome == "too-few" and scorer.model is before  # too few: the prior stays
    for i in range(30, len(texts)):
        await store.add_label(_label(scorer, texts[i], vecs[i], int(ok[i]), i))
    # Labels that say nothing of this model here, or that cannot be read, are not counted.
    junk = [_label(scorer, texts[0], vecs[0], 0, 900, source="feedback", route="cloud"), _label(scorer, texts[0], vecs[0], 0, 901, inputs=None),
            _label(scorer, texts[0], vecs[0], 0, 902, inputs=[1.0]), _label(scorer, texts[0], vecs[0], 0, 903, embedder="other"),
            _label(scorer, texts[0], vecs[0], 0, 904, vector=[0.0] * 3), _label(scorer, texts[0], vecs[0], 0, 905, label=2)]
    for row in junk:
        await store.add_label(row)
    stale = Adapter(1.0, 3.0)  # a correction fitted on the prior head's scores
    scorer.adapter = stale
    result = await adapter.adapt_once()
    assert result.outcome == "adopted" and result.labels == len(texts)
    # The new head goes in without the old head's correction, which is then judged again on the new head's scores.
    assert scorer.adapter is not stale and result.correction is not None and result.correction.outcome != "too-few"
    rows = await adapter.usable_labels()
    rescored = adapter._rescored(scorer.model, rows, np.full(len(rows), -1.0))
    expected = scorer.model.score(vecs, texts, [1] * len(texts))
    made = np.array([int(r["ts"]) - 1000 for r in rows])  # which text each label was made from (junk: 900 and up)
    ours = made < len(texts)
    assert np.allclose(rescored[ours], expected[made[ours]], atol=1e-5)
    assert (rescored[~ours] == -1.0).sum() >= 2  # the labels that kept no inputs keep their own score
    assert result.ability is not None and result.ability["loss_learnt"] < result.ability["loss_prior"]
    learnt = _head(scorer).pair()[0]
    assert learnt.origin == "labels" and learnt.labels == len(texts)
    assert abs(learnt.offset - truth.offset) < 0.5 < abs(prior.offset - truth.offset)
    # The model that made the labels and the learnt one agree on how often the local model does well.
    assert abs(success(u, learnt).mean() - success(u, truth).mean()) < 0.05
    policy = RoutingPolicy(scorer)
    decision = policy.decide(RouteQuery("Write a short poem about the moon.", 10, 1), RouteContext({"l": Route.LOCAL, "c": Route.CLOUD}, frozenset("lc")))
    assert f"local {LOCAL}: learnt from {len(texts)} labels" in decision.as_dict()["router"]
    assert _cloud_named(router_setup[1]) in decision.as_dict()["router"]
    # A weaker local model than assumed: the cloud is worth more on every query.
    x = scorer.model.inputs(vecs, texts, [1] * len(texts))
    assert (scorer.model.head.gain(x) > before.head.gain(before.inputs(vecs, texts, [1] * len(texts)))).all()
    if isinstance(before.head, PairBlendHead):
        # Swapped whole: the head in use before still scores the pair-free part, the new one the pair's gain too.
        assert isinstance(scorer.model.head, PairBlendHead) and scorer.model.head is not before.head
        assert not before.head.knows_pair() and "pair gain" not in before.head.terms(x[:3])
        assert scorer.model.head.knows_pair() and "pair gain" in scorer.model.head.terms(x[:3])
        assert "pair gain unused" not in decision.as_dict()["router"]
    # A new router version (the watcher's reload, which rebuilds the head for the pair) starts from the prior.
    adapter.reset()
    assert "prior" in ClassifierScorer(for_pair(load_router(router_setup[0]), LOCAL, router_setup[1]), query_embedder).name


async def test_labels_that_do_not_beat_the_prior_leave_it_in_use(query_embedder: Embedder, router_setup: tuple[Path, str | None]) -> None:
    """The fit is judged on held-out labels: when the training labels say the opposite of the held-out ones,
    the learnt ability predicts the held-out ones worse than the prior, and the prior stays."""
    scorer = _scorer(query_embedder, *router_setup)
    texts = _texts()
    vecs, _ = _latent(scorer, texts)
    store = MemoryStore()
    for i, t in enumerate(texts):  # the local model did well on every training label, failed every held-out one
        failed, fine = _label(scorer, t, vecs[i], 0, i), _label(scorer, t, vecs[i], 1, i)
        if _held_out(failed):
            await store.add_label(failed)
        elif not _held_out(fine):
            await store.add_label(fine)
    before = scorer.model
    result = await RouterAdapter(scorer, store, interval_s=3600, min_labels=40).adapt_once()
    assert result.outcome == "kept" and result.ability is not None and result.ability["loss_learnt"] >= result.ability["loss_prior"]
    assert scorer.model is before and f"local {LOCAL}: prior" in scorer.name


async def test_labels_that_teach_nothing_beyond_the_prior_leave_it_in_use(
    query_embedder: Embedder, router_setup: tuple[Path, str | None]
) -> None:
    """Outcomes drawn from the prior's own chances (noise around what the head already assumes), ten draws of 198:
    a fit on three quarters of them fits their noise and predicts the held-out quarter worse than the prior, so the
    head in use stays the one that scored before. A draw can beat the prior by chance (3 of seeds 0-19 do, by
    0.004-0.022 of log-loss); with the judge removed every draw would be adopted."""
    texts = _texts()
    kept = 0
    for seed in range(10):
        scorer = _scorer(query_embedder, *router_setup)
        vecs, u = _latent(scorer, texts)
        ok = np.random.default_rng(seed).random(len(texts)) < success(u, _head(scorer).prior_local())
        store = MemoryStore()
        for i, t in enumerate(texts):
            await store.add_label(_label(scorer, t, vecs[i], int(ok[i]), i))
        before = scorer.model
        result = await RouterAdapter(scorer, store, interval_s=3600, min_labels=40).adapt_once()
        assert result.ability is not None and result.outcome in ("kept", "adopted"), result
        if result.outcome == "kept":
            assert result.ability["loss_learnt"] >= result.ability["loss_prior"] and scorer.model is before
            assert f"local {LOCAL}: prior" in scorer.name
            kept += 1
    assert kept >= 8, kept


async def test_a_catalogue_model_is_not_relearnt(query_embedder: Embedder, router_setup: tuple[Path, str | None]) -> None:
    model = for_pair(load_router(router_setup[0], embedder=query_embedder.name, dim=query_embedder.dim), "mistralai/Mixtral-8x7B-Instruct-v0.1", None)
    scorer = ClassifierScorer(model, query_embedder)
    result = await RouterAdapter(scorer, MemoryStore(), interval_s=3600, min_labels=40).adapt_once()
    assert result.ability is None and scorer.model is model


async def test_every_decision_is_explained_by_the_one_ability_that_scored_it(
    query_embedder: Embedder, router_setup: tuple[Path, str | None]
) -> None:
    """Decisions run in a thread while the adaptation swaps a new ability in, round after round: each decision's
    named ability is one that was in use, and its score is exactly that scorer's score (never a mix of two)."""
    scorer = _scorer(query_embedder, *router_setup)
    texts = _texts()
    vecs, u = _latent(scorer, texts)
    prior = _head(scorer).prior_local()
    ok = (np.random.default_rng(1).random(len(texts)) < success(u, Ability(LOCAL, prior.offset - 2.0, prior.loadings, "test"))).astype(int)
    store = MemoryStore()
    adapter = RouterAdapter(scorer, store, interval_s=3600, min_labels=40)
    ctx = RouteContext({"l": Route.LOCAL, "c": Route.CLOUD}, frozenset("lc"))
    policy = RoutingPolicy(scorer)
    queries = [RouteQuery(t, 12, 1) for t in ("Hi!", "Prove that there are infinitely many primes.", "Write a Python function that merges two sorted lists.")]
    seen: list[tuple[int, float | None, str]] = []
    stop = threading.Event()

    def decide() -> None:
        while not stop.is_set():
            for i, q in enumerate(queries):
                d = policy.decide(q, ctx)
                seen.append((i, d.score, d.router))

    # What was in use after each adaptation: the head and the score's correction (refitted after each new ability).
    models: list[tuple[RouterModel, Adapter | None]] = [(scorer.model, scorer.adapter)]
    worker = threading.Thread(target=decide)
    worker.start()
    try:
        n = 0
        for step in range(40, len(texts), 8):
            for i in range(n, step):
                await store.add_label(_label(scorer, texts[i], vecs[i], int(ok[i]), i))
            n = step
            await adapter.adapt_once()
            models.append((scorer.model, scorer.adapter))
            await asyncio.sleep(0.002)
            time.sleep(0.003)
    finally:
        stop.set()
        worker.join()
    assert len({id(m) for m, _ in models}) > 5 and len(seen) > 50
    expected: dict[str, set[tuple[int, float]]] = {}
    # A new head goes in without a correction (the one it had was fitted on the old head's scores); one may follow.
    for m, a in {(id(m), id(a)): (m, a) for m, a in models + [(m, None) for m, _ in models]}.values():
        s = ClassifierScorer(m, query_embedder, a)
        for i, q in enumerate(queries):
            expected.setdefault(s.name, set()).add((i, round(s.score(q), 4)))
    assert {name for _, _, name in seen} <= set(expected)
    for i, score, name in seen:
        assert score is not None and (i, round(score, 4)) in expected[name], (name, i, score)


def test_a_gateway_learns_from_its_cascades_and_route_says_so(make_gateway: Any, router_setup: tuple[Path, str | None]) -> None:
    """End to end: every cascade escalates (the local model was not good enough), each one a label that keeps the
    query's shape numbers and no text; the adaptation learns a weaker local model and /v1/route names it."""
    import httpx

    from tests.conftest import post_chat

    router, cloud = router_setup
    srv = make_gateway(router={"path": router.name, "local_model": LOCAL, "cloud_model": cloud, "threshold": 1.0, "t_local": 0.0,
                               "mode": "cascade", "adapt_s": 3600, "adapt_min_labels": 8}, collaboration={"cascade_min_confidence": 1.0})
    gw = srv.gateway
    result = None
    for i, text in enumerate(_texts()[:40]):
        r = post_chat(srv.url, {"model": "hybridgate/auto", "messages": [{"role": "user", "content": text}], "max_tokens": 2})
        assert r.status_code == 200 and r.json()["hybridgate"]["collaboration"]["escalated"] is True
        if i >= 7:
            result = asyncio.run(gw.adapter.adapt_once())  # the in-process store is not bound to the server's loop
            if result.outcome != "too-few":
                break
    assert result is not None and result.outcome == "adopted", result
    labels = asyncio.run(gw.state.labels(100))
    assert all(len(x["inputs"]) == len(label_inputs(gw.policy.scorer, "", 1) or [1, 2]) and "Python" not in str(x) for x in labels)
    route = httpx.post(f"{srv.url}/v1/route", json={"model": "hybridgate/auto", "messages": [{"role": "user", "content": "Hi"}]}, timeout=60)
    assert f"local {LOCAL}: learnt from {result.labels} labels" in route.json()["router"], route.text
    assert _head(gw.policy.scorer).pair()[0].offset < _head(gw.policy.scorer).prior_local().offset
    # A label keeps what the pair's outcome model reads beyond the vector (the shape features), whichever head.
    assert all(len(x["inputs"]) == _head(gw.policy.scorer).model.x_mean.size - gw.policy.scorer.model.dim for x in labels)


@needs_pair_blend
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(st.text(min_size=0, max_size=400), min_size=1, max_size=6), turns=st.integers(1, 8), seed=st.integers(0, 2**32 - 1))
def test_an_unknown_local_model_scores_exactly_the_pair_free_part(
    query_embedder: Embedder, texts: list[str], turns: int, seed: int
) -> None:
    """The invariant: with the local model's ability the prior, pair-blend-static scores every query as with
    neither model known (its pair-free part), whatever the cloud, and no decision names the pair's gain; with a
    learnt local ability the gain is back. Queries: any text (its shape features), read with its real vector and
    with random unit vectors."""
    loaded = load_router(PAIR_BLEND, embedder=query_embedder.name, dim=query_embedder.dim)
    free = loaded.head.with_pair(None, None)
    vectors = np.vstack([query_embedder.encode(texts), np.random.default_rng(seed).normal(size=(len(texts), query_embedder.dim))])
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)
    x = loaded.inputs(vectors.astype(np.float32), texts * 2, [turns] * 2 * len(texts))
    want = free.score(x)
    for cloud in (CLOUD, "gpt4_1106_preview", None):
        head = loaded.head.with_pair(LOCAL, cloud)
        assert isinstance(head, PairBlendHead) and head.pair()[0].origin == "prior"
        np.testing.assert_array_equal(head.score(x), want)
        assert "pair gain" not in head.terms(x) and all(name != "pair gain" for name, _ in head.explained(x[:1])[1])
        assert "pair gain unused" in head.describe_pair()
    prior = _head(_scorer(query_embedder, PAIR_BLEND, CLOUD)).prior_local()
    learnt = loaded.head.with_pair(LOCAL, CLOUD).with_local(Ability(LOCAL, prior.offset - 2.0, prior.loadings, "labels", 100))
    assert isinstance(learnt, PairBlendHead) and learnt.knows_pair() and "pair gain" in learnt.terms(x)
    assert "local SmolLM2-135M-Instruct: learnt from 100 labels" in learnt.describe_pair() and "unused" not in learnt.describe_pair()
