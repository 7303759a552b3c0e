"""A gateway's own labels adjust the shipped router for its traffic: validated before adoption, dropped on reload."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import numpy as np

from hybridgate.classifiers.artifact import load_router, resolve_router
from hybridgate.classifiers.embedder import CachedEmbedder, Embedder
from hybridgate.router import RouteQuery
from hybridgate.router.classifier_scorer import ClassifierScorer
from hybridgate.serving.router_adapt import RouterAdapter, learns_local_ability
from hybridgate.serving.state.memory import MemoryStore
from tests.conftest import ServerThread, post_chat

GARDEN = ["How deep should I plant {} bulbs?", "When do I prune my {} bush?", "Why are the leaves of my {} turning yellow?"]
TRAVEL = ["Is {} worth visiting in winter?", "What should I pack for a week in {}?", "How long is the flight to {}?"]
THINGS = ["tulip", "rose", "lilac", "hydrangea", "peony", "dahlia", "iris", "lavender", "azalea", "camellia", "crocus", "magnolia"]
PLACES = ["Oslo", "Lisbon", "Kyoto", "Quebec", "Vienna", "Reykjavik", "Prague", "Tallinn", "Seville", "Bergen", "Krakow", "Porto"]


async def _labels(store: MemoryStore, scorer: ClassifierScorer, texts: list[str], label: int) -> None:
    for t in texts:
        vec = scorer.embedder.encode([t])[0]
        base = float(scorer.model.score(scorer.embedder.encode([t]), [t])[0])
        await store.add_label({"ts": time.time(), "embedder": scorer.embedder.name, "vector": [float(v) for v in vec], "label": label,
                               "source": "feedback", "rating": None, "route": "local", "base_score": base, "router_version": scorer.version})


async def test_labels_teach_the_gateway_what_its_users_need(query_embedder: Embedder) -> None:
    """On this gateway, the local model fails gardening questions and handles travel ones; the shipped router
    cannot know that. After labels, gardening scores above travel."""
    model = load_router(resolve_router(None), embedder=query_embedder.name, dim=query_embedder.dim)
    scorer = ClassifierScorer(model, CachedEmbedder(query_embedder, 0))
    store = MemoryStore()
    adapter = RouterAdapter(scorer, store, interval_s=3600, min_labels=40)
    garden = [q.format(t) for q in GARDEN for t in THINGS]
    travel = [q.format(p) for q in TRAVEL for p in PLACES]
    await _labels(store, scorer, garden[:10], 1)
    await _labels(store, scorer, travel[:10], 0)
    assert (await adapter.correct_once()).outcome == "too-few" and scorer.adapter is None
    await _labels(store, scorer, garden[10:30], 1)
    await _labels(store, scorer, travel[10:30], 0)
    before = {t: scorer.score(RouteQuery(t, 10, 1)) for t in garden[30:] + travel[30:]}
    result = await adapter.correct_once()
    assert result.outcome == "adopted" and result.auc_adapted > result.auc_router
    after = {t: scorer.score(RouteQuery(t, 10, 1)) for t in before}
    gap = lambda s: np.mean([s[t] for t in garden[30:]]) - np.mean([s[t] for t in travel[30:]])  # noqa: E731
    assert gap(after) > gap(before) + 0.1
    _, signals = scorer.score_explained(RouteQuery(garden[31], 10, 1))
    assert "this gateway's labels" in {s.name for s in signals}
    # Labels made under another router version do not count, and a reload drops the adapter.
    adapter.reset()
    assert scorer.adapter is None
    scorer.model.meta["version"] = "another"
    assert (await adapter.correct_once()).outcome == "too-few"


async def test_an_adapter_that_does_not_help_is_not_adopted(query_embedder: Embedder) -> None:
    model = load_router(resolve_router(None), embedder=query_embedder.name, dim=query_embedder.dim)
    scorer = ClassifierScorer(model, CachedEmbedder(query_embedder, 0))
    store = MemoryStore()
    rng = np.random.default_rng(3)
    texts = [q.format(t) for q in GARDEN + TRAVEL for t in THINGS]
    for i, t in enumerate(texts):  # labels that are noise
        await _labels(store, scorer, [t], int(rng.random() < 0.5))
    result = await RouterAdapter(scorer, store, interval_s=3600, min_labels=40).correct_once()
    assert result.labels == len(texts)
    if result.outcome != "adopted":
        assert scorer.adapter is None
    else:  # adopted only because it ranked the held-out labels better, which noise can do by chance
        assert result.auc_adapted > result.auc_router


def test_readyz_reports_the_adapter(make_gateway: Callable[..., ServerThread]) -> None:
    gw = make_gateway(router={"adapt_s": 3600, "adapt_min_labels": 8})
    r = post_chat(gw.url, {"model": "hybridgate/auto", "messages": [{"role": "user", "content": "Hi there"}], "max_tokens": 2})
    assert r.status_code == 200
    ready = httpx.get(f"{gw.url}/readyz").json()
    info = ready["router"]
    assert info["adapted"] is False and "adapter" in info


async def test_the_default_router_is_corrected_by_its_labels_as_well_as_learning_its_local_model(query_embedder: Embedder) -> None:
    """The default router learns an unknown local model's ability, and its score is still corrected by the labels
    that say nothing of the local model (feedback on cloud answers, say): one adaptation does both."""
    model = load_router(resolve_router(None), embedder=query_embedder.name, dim=query_embedder.dim)
    assert learns_local_ability(model)
    scorer = ClassifierScorer(model, CachedEmbedder(query_embedder, 0))
    store = MemoryStore()
    adapter = RouterAdapter(scorer, store, interval_s=3600, min_labels=40)
    garden = [q.format(t) for q in GARDEN for t in THINGS]
    travel = [q.format(p) for q in TRAVEL for p in PLACES]
    await _labels(store, scorer, garden[:30], 1)
    await _labels(store, scorer, travel[:30], 0)
    result = await adapter.adapt_once()
    assert result.ability is not None or result.outcome == "too-few"  # the ability's step ran: these labels carry no inputs
    assert result.correction is not None and result.correction.outcome == "adopted", result
    assert scorer.adapter is not None and adapter.last is result
    assert result.as_dict()["correction"]["outcome"] == "adopted"
