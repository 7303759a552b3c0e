"""The fleet's correction of the shipped router: composed exactly, saved safely, judged on a gateway's own labels."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridgate.classifiers.adapt import Adapter
from hybridgate.classifiers.artifact import ArtifactError, load_router, resolve_router, save_router
from hybridgate.classifiers.data import load_routing_data
from hybridgate.classifiers.embedder import Embedder
from hybridgate.federated.deploy import correction_round, labels_file
from hybridgate.federated.fleet_adaptation import correction_rows, identity, subdivide
from hybridgate.federated.task import scores
from hybridgate.router import RoutingPolicy
from hybridgate.router.classifier_scorer import ClassifierScorer
from hybridgate.serving.router_reload import RouterWatcher
from hybridgate.serving.state.memory import MemoryStore
from tests.conftest import ServerThread

FIXTURE = Path(__file__).parent / "fixtures" / "routing"
finite = st.floats(-1, 1, allow_nan=False)  # log-odds within +-9: clear of the clipping at 1e-4


@settings(max_examples=200, deadline=None)
@given(st.lists(finite, min_size=6, max_size=6), st.lists(finite, min_size=6, max_size=6), st.floats(0.05, 0.95), st.lists(finite, min_size=4, max_size=4))
def test_two_corrections_compose_into_one(first: list[float], second: list[float], p: float, x: list[float]) -> None:
    c1, c2 = Adapter.from_weights(np.array(first)), Adapter.from_weights(np.array(second))
    base, vec = np.array([p]), np.array([x], dtype=np.float32)
    one_after_other = c2.apply(c1.apply(base, vec), vec)
    assert np.allclose(c1.then(c2).apply(base, vec), one_after_other, atol=1e-4)
    assert c1.a >= 0 and c2.a >= 0  # a correction may discount the router's ranking, never reverse it


def test_the_weights_the_fleet_trains_are_the_correction_the_router_applies() -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(size=6).astype(np.float32)
    w[0] = abs(w[0])
    base, x = rng.uniform(0.05, 0.95, 50), rng.normal(size=(50, 4)).astype(np.float32)

    assert np.allclose(Adapter.from_weights(w).apply(base, x), scores(w, correction_rows(base, x)), atol=1e-5)
    assert np.array_equal(Adapter.from_weights(w).weights(), w)
    assert np.allclose(scores(identity(4), correction_rows(base, x)), base, atol=1e-5)  # the identity changes no score
    with pytest.raises(ValueError, match="finite"):
        Adapter.from_weights(np.array([1.0, np.nan, 0.0]))


def _shipped_and_rows(emb: Embedder) -> tuple:
    data = load_routing_data(FIXTURE, "small-model", "large-model")
    x = emb.encode(list(data.prompts))
    shipped = load_router(resolve_router("blend-static"))
    return shipped, x, data, shipped.score(x, list(data.prompts))


def test_a_corrected_router_saves_loads_and_explains_itself(query_embedder: Embedder, tmp_path: Path) -> None:
    shipped, x, data, base = _shipped_and_rows(query_embedder)
    rng = np.random.default_rng(1)
    step = identity(shipped.dim)
    step[1:-1] = rng.normal(scale=0.5, size=shipped.dim)
    one = correction_round(shipped, step, rounds=3)
    header = save_router(one, tmp_path / "one")
    loaded = load_router(tmp_path / "one", embedder=query_embedder.name, dim=query_embedder.dim)
    expected = Adapter.from_weights(step).apply(base, x)
    assert np.allclose(loaded.score(x, list(data.prompts)), expected, atol=1e-5)
    assert header["fleet"] == {"rounds": 3, "trained_on": shipped.version} and loaded.trained_on == shipped.version
    assert header["head"] == shipped.meta["head"] and header["version"] != shipped.version
    inputs = loaded.inputs(x[:1], [data.prompts[0]])
    score, pushes = loaded.score_explained(inputs)
    assert abs(score - expected[0]) < 1e-5 and "the fleet's labels" in [n for n, _ in pushes]
    # A second round on top of the first: one composed correction, and the step alone judged on the first's scores.
    two = correction_round(loaded, step)
    save_router(two, tmp_path / "two")
    again = load_router(tmp_path / "two")
    assert again.trained_on == loaded.version
    assert np.allclose(again.score(x, list(data.prompts)), Adapter.from_weights(step).apply(expected, x), atol=1e-4)


def test_a_damaged_correction_is_refused(query_embedder: Embedder, tmp_path: Path) -> None:
    shipped, *_ = _shipped_and_rows(query_embedder)
    bad = identity(shipped.dim)
    one = correction_round(shipped, bad)
    assert one.fleet is not None
    one.fleet.v = np.full(shipped.dim, np.nan, dtype=np.float32)  # written with a valid hash: the numbers are the problem
    save_router(one, tmp_path / "r")
    with pytest.raises(ArtifactError, match="finite"):
        load_router(tmp_path / "r")
    with pytest.raises(ValueError, match="dimensional"):
        shipped.corrected(Adapter.identity(3))


def test_a_labels_file_is_checked_and_keeps_the_base_versions_rows(tmp_path: Path) -> None:
    x = np.ones((3, 4), dtype=np.float32)
    good = tmp_path / "good.npz"
    np.savez(good, x=x, label=np.array([0, 1, 1]), base_score=np.array([0.2, 0.5, 0.9]), router_version=np.array(["v1", "v1", "v0"]))
    base, vectors, labels = labels_file(good, "v1")
    assert base.tolist() == [0.2, 0.5] and labels.tolist() == [0, 1] and vectors.shape == (2, 4)
    assert len(labels_file(good)[2]) == 3
    cases = {
        "missing base_score": ({"x": x, "label": np.array([0, 1, 1]), "router_version": "v1"}, "missing base_score"),
        "label 2": ({"x": x, "label": np.array([0, 2, 1]), "base_score": np.zeros(3), "router_version": "v1"}, "0 or 1"),
        "score 7": ({"x": x, "label": np.array([0, 1, 1]), "base_score": np.array([0, 7, 0]), "router_version": "v1"}, r"\[0, 1\]"),
        "rows": ({"x": x[:2], "label": np.array([0, 1, 1]), "base_score": np.zeros(3), "router_version": "v1"}, "one row per label"),
    }
    for name, (arrays, why) in cases.items():
        path = tmp_path / f"{name}.npz"
        np.savez(path, **arrays)
        with pytest.raises(ValueError, match=why):
            labels_file(path)
    (tmp_path / "text.npz").write_text("not an npz")
    with pytest.raises(ValueError, match="not a readable npz"):
        labels_file(tmp_path / "text.npz")


def test_the_gateway_judges_the_fleets_correction_on_the_scores_its_labels_got(query_embedder: Embedder, tmp_path: Path) -> None:
    shipped, x, data, base = _shipped_and_rows(query_embedder)
    folder = tmp_path / "router"
    save_router(shipped, folder, name="blend-static")
    current = load_router(folder)
    state = MemoryStore()
    for vec, label, score in zip(x, data.label, base, strict=True):
        asyncio.run(state.add_label({"embedder": query_embedder.name, "vector": vec.tolist(), "label": int(label),
                                     "base_score": float(score), "router_version": current.version}))
    scorer = ClassifierScorer(current, query_embedder)
    watcher = RouterWatcher(folder, RoutingPolicy(scorer), state, interval_s=1.0)
    # A correction that points the wrong way (the router's ranking discounted, the labels' direction reversed) is refused.
    from hybridgate.federated.task import LocalData, local_train

    rows = correction_rows(base, x)
    learnt = local_train(identity(current.dim), LocalData(rows, data.label), epochs=200, lr=0.5)
    wrong = -learnt
    wrong[0] = 0.0
    save_router(correction_round(current, wrong), folder, name="federated")
    assert asyncio.run(watcher.check_once()) == "kept", watcher.history[-1]
    assert watcher.history[-1]["labels"] == len(data)
    # The one learnt on these labels ranks them better: taken.
    save_router(correction_round(current, learnt), folder, name="federated")
    assert asyncio.run(watcher.check_once()) == "loaded", watcher.history[-1]
    judged = watcher.history[-1]
    assert judged["auc_new"] > judged["auc_current"] and scorer.model.trained_on == current.version


def test_more_gateways_for_dp_keep_each_within_its_parent() -> None:
    parents = np.array([0, 0, 1, 1, 2, 2, 2])
    keys = ["0a", "1b", "2c", "3d", "4e", "5f", "6a"]
    children = subdivide(parents, 4, keys)
    assert (children // 4 == parents).all() and len(set(children.tolist())) > 3
    assert (subdivide(parents, 1, keys) == parents).all()


def test_export_labels_writes_what_a_supernode_reads(make_gateway: Callable[..., ServerThread], query_embedder: Embedder, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from hybridgate.cli import app

    srv = make_gateway(server={"api_keys": ["k-export"]})
    gw = srv.gateway  # type: ignore[attr-defined]
    vec = query_embedder.encode(["what is 2 + 2?"])[0].tolist()
    for i in range(3):
        asyncio.run(gw.state.add_label({"embedder": query_embedder.name, "vector": vec, "label": i % 2, "base_score": 0.25 * i,
                                        "router_version": "v-now"}))
    asyncio.run(gw.state.add_label({"embedder": query_embedder.name, "vector": vec, "label": 1}))  # from before labels kept scores
    key = tmp_path / "key"
    key.write_text("k-export\n")
    out = tmp_path / "labels.npz"
    runner = CliRunner()
    denied = runner.invoke(app, ["fl", "export-labels", "--gateway-url", srv.url, "--out", str(out)], env={"HYBRIDGATE_API_KEY": ""})
    assert denied.exit_code == 2 and "refused" in denied.output and not out.exists()
    r = runner.invoke(app, ["fl", "export-labels", "--gateway-url", srv.url, "--api-key-file", str(key), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "wrote 3 labels (1 without the router's score left out; router versions v-now)" in r.output
    base, x, labels = labels_file(out, "v-now")
    assert sorted(base.tolist()) == [0.0, 0.25, 0.5] and sorted(labels.tolist()) == [0, 0, 1] and x.shape == (3, query_embedder.dim)
    gone = runner.invoke(app, ["fl", "export-labels", "--gateway-url", "http://127.0.0.1:9", "--out", str(tmp_path / "x.npz")])
    assert gone.exit_code == 2 and "no labels read" in gone.output
