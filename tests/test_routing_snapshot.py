"""One routing snapshot: a reload, an adopted correction and a recalibration each replace the scorer, its
correction and its thresholds whole, in one assignment, so a decision made meanwhile uses one state the gateway
meant, never the new router with the old thresholds or the old router's correction."""

from __future__ import annotations

import asyncio
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np

from hybridgate.classifiers.adapt import Adapter
from hybridgate.classifiers.artifact import load_router, resolve_router
from hybridgate.classifiers.embedder import CachedEmbedder, Embedder
from hybridgate.router import Decision, Route, RouteContext, RouteQuery, RoutingPolicy, RoutingSnapshot
from hybridgate.router.classifier_scorer import Classifier, ClassifierScorer
from hybridgate.serving.config import GatewayConfig
from hybridgate.serving.node_stats import NodeStats
from hybridgate.serving.router_reload import thresholds_for
from hybridgate.serving.router_upkeep import RouterUpkeep
from hybridgate.serving.state.memory import MemoryStore

ADAPTED = "this gateway's labels"  # the signal an adapter adds to the score it corrects
State = tuple[str | None, float | None, float | None, bool]  # router version, t_cloud, t_local, corrected


def _state(snap: RoutingSnapshot) -> State:
    assert isinstance(snap.scorer, Classifier)
    return snap.version, snap.threshold, snap.t_low, snap.scorer.adapter is not None


def _seen(d: Decision) -> State:
    return d.router_version, d.threshold, d.t_local, any(s.name == ADAPTED for s in d.signals)


def test_no_decision_mixes_two_routing_snapshots(query_embedder: Embedder, tmp_path: Path) -> None:
    folder = tmp_path / "router"
    shutil.copytree(resolve_router("blend-static"), folder)
    cfg = GatewayConfig.model_validate(
        {
            "router": {"path": str(folder), "cloud_share": 0.3, "gray_share": 0.2, "watch_s": 3600, "adapt_s": 3600,
                       "recalibrate_every": 1, "recalibrate_window": 50},
            "state": {"labels": True},
        }
    )
    model = load_router(folder, embedder=query_embedder.name, dim=query_embedder.dim)
    policy = RoutingPolicy(ClassifierScorer(model, CachedEmbedder(query_embedder, 64)), *thresholds_for(model, cfg.router))
    state = MemoryStore()
    upkeep = RouterUpkeep(cfg, policy, state, NodeStats())
    watcher, adapter = upkeep.watcher, upkeep.adapter
    assert watcher is not None and adapter is not None
    # A second version in the folder, loaded (no labels here to judge it by): rollback then swaps between the two.
    shutil.rmtree(folder)
    shutil.copytree(resolve_router("mmlu-static"), folder)
    assert asyncio.run(watcher.check_once()) == "loaded" and watcher.previous is not None

    ctx = RouteContext({"l": Route.LOCAL, "c": Route.CLOUD}, frozenset("lc"))
    queries = [RouteQuery(t, 12, 1) for t in ("Hi!", "What is the capital of France?", "Prove that there are infinitely many primes.")]
    rng = np.random.default_rng(7)

    async def reload() -> None:
        assert watcher.rollback()

    async def adapt() -> None:
        adapter.scorer.adapter = Adapter(1.0, 3.0)  # what an adopted correction puts in use

    async def recalibrate() -> None:
        for score in rng.random(50):
            await state.log_decision({"decided": {"score": round(float(score), 6)}})
        await upkeep.recalibrate()

    # The decisions can tell a corrected snapshot from one without: the correction is among their signals.
    asyncio.run(adapt())
    assert all(_seen(policy.decide(q, ctx))[3] for q in queries)
    asyncio.run(reload())
    assert not any(_seen(policy.decide(q, ctx))[3] for q in queries)

    intended: set[State] = {_state(policy.snapshot)}
    by_serial: dict[int, State] = {policy.snapshot.serial: _state(policy.snapshot)}
    seen: list[tuple[int | None, State]] = []
    stop = threading.Event()

    def decide() -> None:
        while not stop.is_set():
            for q in queries:
                d = policy.decide(q, ctx)
                seen.append((d.snapshot, _seen(d)))

    give_up = time.monotonic() + 120  # waits for the deciding thread end here, whatever the machine

    async def churn(rounds: int) -> None:
        for i in range(rounds):
            before = policy.snapshot.serial
            await (reload, adapt, recalibrate)[i % 3]()
            snap = policy.snapshot
            # Each change is one new snapshot: a change made in steps would put a half-made one in use.
            assert snap.serial == before + 1, f"{(reload, adapt, recalibrate)[i % 3].__name__} replaced the snapshot {snap.serial - before} times"
            intended.add(_state(snap))
            by_serial[snap.serial] = _state(snap)
            # Let the deciding thread decide a few times under each snapshot (a count, not a time: a loaded
            # machine may give it few turns otherwise); the short switch interval still lands decisions inside
            # the changes themselves.
            target = len(seen) + 3
            while len(seen) < target and time.monotonic() < give_up:
                time.sleep(0.0002)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # hand the interpreter between the threads often: in the middle of a change, too
    worker = threading.Thread(target=decide)
    worker.start()
    try:
        asyncio.run(churn(240))
    finally:
        stop.set()
        worker.join()
        sys.setswitchinterval(interval)
    versions = {s[0] for s in intended}
    assert len(versions) == 2 and len(intended) > 50 and len(seen) > 300, (len(intended), len(seen))
    mixed = [s for _, s in seen if s not in intended]
    assert not mixed, f"{len(mixed)} of {len(seen)} decisions mixed two snapshots, e.g. {mixed[0]}"
    assert all(by_serial[serial] == s for serial, s in seen if serial in by_serial), "a decision reported another snapshot than it used"
