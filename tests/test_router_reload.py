"""A new router version picked up without a restart, compared on the device's own labels, kept or rolled back."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

from hybridgate.classifiers.artifact import resolve_router, save_router
from hybridgate.classifiers.data import load_routing_data
from hybridgate.classifiers.embedder import Embedder
from hybridgate.classifiers.model import RouterModel
from hybridgate.classifiers.training import fit_router
from hybridgate.router import RoutingPolicy
from hybridgate.router.classifier_scorer import ClassifierScorer
from hybridgate.serving.router_reload import RouterWatcher, auc
from hybridgate.serving.state.memory import MemoryStore
from tests.conftest import ServerThread

FIXTURE = Path(__file__).parent / "fixtures" / "routing"


def _fixture_router(emb: Embedder, *, flip: bool = False) -> tuple[RouterModel, np.ndarray, np.ndarray]:
    data = load_routing_data(FIXTURE, "small-model", "large-model")
    x = emb.encode(list(data.prompts))
    model = fit_router(data, x, "logistic", {"C": 1.0}, embedder=emb.name, calibrate=True)
    if flip:  # the same router, pointing the wrong way: strictly worse on any labels it was good on
        model.head.coef = -model.head.coef  # type: ignore[attr-defined]
        model.head.intercept = -model.head.intercept  # type: ignore[attr-defined]
    return model, x, data.label


def test_auc_by_hand() -> None:
    assert auc(np.array([0.9, 0.8, 0.1]), np.array([1, 1, 0])) == 1.0
    assert auc(np.array([0.1, 0.9]), np.array([1, 0])) == 0.0
    assert auc(np.array([0.5, 0.5]), np.array([1, 0])) == 0.5
    assert auc(np.array([0.5]), np.array([1])) is None


def test_watcher_loads_better_keeps_current_over_worse_and_refuses_invalid(query_embedder: Embedder, tmp_path: Path) -> None:
    folder = tmp_path / "router"
    good, x, y = _fixture_router(query_embedder)
    save_router(good, folder, name="fixture")
    from hybridgate.classifiers.artifact import load_router

    scorer = ClassifierScorer(load_router(folder), query_embedder)
    state = MemoryStore()
    for vec, label in zip(x[:60], y[:60], strict=True):
        asyncio.run(state.add_label({"embedder": query_embedder.name, "vector": vec.tolist(), "label": int(label)}))
    watcher = RouterWatcher(folder, RoutingPolicy(scorer), state, interval_s=1.0)
    assert asyncio.run(watcher.check_once()) is None  # nothing new

    bad, _, _ = _fixture_router(query_embedder, flip=True)
    save_router(bad, folder, name="fixture-flipped")
    assert asyncio.run(watcher.check_once()) == "kept"
    assert scorer.version == good.meta["version"] and watcher.history[-1]["auc_new"] < watcher.history[-1]["auc_current"]

    (folder / "router.json").write_text('{"format": "hybridgate-router", "format_version": 1, "version": "zzz"}')
    assert asyncio.run(watcher.check_once()) == "invalid" and scorer.version == good.meta["version"]

    # Less regularised, this one fits the device's labels (drawn from its own training rows) better: it is taken.
    retrained = fit_router(load_routing_data(FIXTURE, "small-model", "large-model"), x, "logistic", {"C": 10.0}, embedder=query_embedder.name)
    save_router(retrained, folder, name="fixture-v2")
    outcome = asyncio.run(watcher.check_once())
    assert outcome == "loaded", watcher.history[-1]
    assert scorer.version == retrained.meta["version"] and watcher.previous is not None
    assert watcher.rollback() and scorer.version == good.meta["version"]


def test_running_gateway_serves_a_new_version_without_restart(make_gateway: Callable[..., ServerThread], query_embedder: Embedder, tmp_path: Path) -> None:
    folder = tmp_path / "live"
    shutil.copytree(resolve_router("mmlu-static"), folder)
    srv = make_gateway(router={"path": str(folder), "watch_s": 0.2})
    first = httpx.get(f"{srv.url}/readyz").json()["router"]
    assert first["name"] == "mmlu-static"
    model, _, _ = _fixture_router(query_embedder)
    header = save_router(model, folder, name="published-by-federation")
    deadline = time.monotonic() + 10
    while httpx.get(f"{srv.url}/readyz").json()["router"]["version"] != header["version"] and time.monotonic() < deadline:
        time.sleep(0.1)
    now = httpx.get(f"{srv.url}/readyz").json()["router"]
    assert now["version"] == header["version"] and now["previous"] == first["version"]
    assert f'hybridgate_router_info{{router="published-by-federation",version="{header["version"]}"}} 1.0' in httpx.get(f"{srv.url}/metrics").text
    d = httpx.post(f"{srv.url}/v1/route", json={"model": "hybridgate/auto", "messages": [{"role": "user", "content": "hi"}]}).json()
    assert d["router_version"] == header["version"] and d["threshold"] == round(model.default_threshold(), 6)
