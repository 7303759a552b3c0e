"""A fleet fits its unknown local model's ability together (issue 22, point 3): the deployed ServerApp and ClientApp
under Flower's simulation runtime with SecAgg+, one gateway a real one over HTTP whose labels its client reads from
its state store, four more simulated with a dozen labels each. The published ability is the one all their labels
pooled would fit, and the running gateway, too few labels to fit its own, takes it once it beats the prior on
labels it kept home; an ability that does not is left unused."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from hybridgate.classifiers.artifact import load_router
from hybridgate.classifiers.embedder import Embedder
from hybridgate.classifiers.local_labels import SD_UNKNOWN, held_out
from hybridgate.classifiers.pair_score import Ability, fit_ability, success
from hybridgate.federated.fleet_adaptation import correction_rows
from hybridgate.router.classifier_scorer import ClassifierScorer
from hybridgate.serving.router_adapt import RouterAdapter
from hybridgate.serving.state.memory import MemoryStore
from tests.conftest import ServerThread
from tests.test_local_ability import ACROSS, LOCAL, SETUPS, _head, _label, _latent, _scorer, _texts, pytestmark  # noqa: F401

GATEWAYS = 5
OWN = 36  # the real gateway's labels: under the 40 it needs to fit its own ability, enough to judge the fleet's


@dataclass
class Labels:
    """Each simulated gateway's labels of its local model (an npz by partition); partition 0 is the real gateway,
    whose labels its client reads over loopback from the gateway's state store (``deploy.gateway_local_outcomes``)."""

    path: str
    url: str

    def __call__(self, context: Any, embedder: str, dim: int, extra: int) -> tuple[np.ndarray, np.ndarray]:
        from hybridgate.federated.deploy import gateway_local_outcomes

        partition = int(context.node_config["partition-id"])
        if partition == 0:
            return gateway_local_outcomes(SimpleNamespace(node_config={"gateway-url": self.url}), embedder, dim, extra)
        with np.load(self.path) as npz:
            mine = npz["gateway"] == partition
            return npz["x"][mine], npz["y"][mine]


@pytest.fixture(params=SETUPS)
def router_setup(request: pytest.FixtureRequest) -> tuple[Path, str | None]:
    """Each head that learns a local ability (``across-static``'s outcomes head, ``pair-blend-static``'s)."""
    setup: tuple[Path, str | None] = request.param
    return setup


def _federate(published: Path, labels: Labels, corrections: str, base_version: str) -> None:
    """The deployed ServerApp (``deploy._server``) with ``fl server``'s run config, over simulated SuperNodes."""
    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    from hybridgate.federated import deploy
    from hybridgate.federated.apps import make_client_app
    from hybridgate.federated.simulation import PartitionFile

    server = ServerApp()

    @server.main()
    def main(grid: Any, context: Any) -> None:
        context.run_config.update({
            "num-server-rounds": 1, "min-clients": GATEWAYS, "publish-dir": str(published), "base-router": str(published),
            "base-version": base_version, "embedder": "all-MiniLM-L6-v2-static", "secure-agg": True, "local-model": LOCAL,
            "ability-rounds": 8,
        })
        deploy._server(grid, context)

    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    with threadpool_limits(limits=1):
        run_simulation(
            server_app=server,
            client_app=make_client_app(PartitionFile(corrections), require_secure=True, ability_labels=labels),
            num_supernodes=GATEWAYS,
            backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                            "init_args": {"num_cpus": os.cpu_count() or 1, "include_dashboard": False, "log_to_driver": False}},
        )


def test_a_fleet_fits_the_pooled_ability_and_a_gateway_takes_it(
    make_gateway: Callable[..., ServerThread], query_embedder: Embedder, tmp_path: Path
) -> None:
    published = tmp_path / "router"
    shutil.copytree(ACROSS, published)
    scorer = _scorer(query_embedder)
    prior = _head(scorer).prior_local()
    truth = Ability(LOCAL, prior.offset - 2.0, prior.loadings, "test")  # far weaker than the prior says
    texts = _texts()
    vecs, u = _latent(scorer, texts)
    ok = (np.random.default_rng(3).random(len(texts)) < success(u, truth)).astype(int)
    rows = [_label(scorer, t, vecs[i], int(ok[i]), i, router_version="an-older-router") for i, t in enumerate(texts)]
    x = np.asarray([r["vector"] + r["inputs"] for r in rows])

    gateway = make_gateway(router={"path": str(published), "local_model": LOCAL, "watch_s": 0.3, "adapt_s": 3600, "adapt_min_labels": 40})
    gw = gateway.gateway  # type: ignore[attr-defined]
    for r in rows[:OWN]:
        asyncio.run(gw.state.add_label(r))
    kept_home = np.array([held_out(r) for r in rows[:OWN]])
    assert kept_home.sum() >= 8, "enough held-out labels to judge the fleet's ability"
    others = np.arange(OWN, OWN + 12 * (GATEWAYS - 1))  # four gateways of twelve labels each
    np.savez(tmp_path / "ability.npz", x=x[others], y=ok[others].astype(float), gateway=1 + (others - OWN) // 12)
    rng = np.random.default_rng(0)  # the correction's rounds run too: random labels, beside the point here
    np.savez(tmp_path / "corrections.npz", x=correction_rows(rng.uniform(0.1, 0.9, 50), vecs[:50]), label=rng.integers(0, 2, 50).astype(np.int8),
             gateway=np.arange(50) % GATEWAYS)

    base = load_router(published)
    _federate(published, Labels(str(tmp_path / "ability.npz"), gateway.url), str(tmp_path / "corrections.npz"), base.version)
    header = load_router(published).meta
    fleet = header["local_ability"]
    # Sent: the real gateway's labels except the quarter it keeps home, and every label of the others.
    sent = np.concatenate([np.arange(OWN)[~kept_home], others])
    pooled = fit_ability(u[sent], ok[sent].astype(float), prior, *SD_UNKNOWN)
    assert fleet["name"] == LOCAL and fleet["labels"] == len(sent) == pooled.labels and fleet["gateways"] == GATEWAYS
    # Through SecAgg+'s masking and rounding, the same fit (to the header's 6 decimals; one limb left it 0.05 off).
    assert abs(fleet["offset"] - pooled.offset) < 1e-4 and np.abs(np.asarray(fleet["loadings"]) - pooled.loadings).max() < 1e-4, (fleet, pooled)
    assert abs(pooled.offset - truth.offset) < abs(prior.offset - truth.offset)

    deadline = time.monotonic() + 60  # the running gateway hot-reloads the published router, fleet ability beside it
    while httpx.get(f"{gateway.url}/readyz").json()["router"]["version"] == base.version and time.monotonic() < deadline:
        time.sleep(0.2)
    assert gw.adapter.fleet is not None and gw.adapter.fleet.labels == len(sent)
    result = asyncio.run(gw.adapter.adapt_once())
    assert result.outcome == "adopted", result
    info = result.ability
    assert info is not None and "loss_learnt" not in info and info["loss_fleet"] < info["loss_prior"], info  # too few to fit its own
    assert info["origin"] == f"the fleet's {len(sent)} labels ({GATEWAYS} gateways)"
    local = _head(gw.policy.scorer).pair()[0]
    assert local.offset == fleet["offset"] and local.labels == len(sent)
    route = httpx.post(f"{gateway.url}/v1/route", json={"model": "hybridgate/auto", "messages": [{"role": "user", "content": "Hi"}]}, timeout=60)
    assert f"local {LOCAL}: learnt from {len(sent)} labels" in route.json()["router"], route.text


async def test_a_fleet_ability_that_does_not_beat_the_prior_here_is_not_used(
    query_embedder: Embedder, router_setup: tuple[Path, str | None]
) -> None:
    """The guard: the fleet's ability is judged on this gateway's held-out labels like its own. One that says the
    local model is far stronger than it is here predicts them worse than the prior and is left unused; the same
    gateway takes one that predicts them better. For every head that learns a local ability (``router_setup``)."""
    scorer = _scorer(query_embedder, *router_setup)
    prior = _head(scorer).prior_local()
    truth = Ability(LOCAL, prior.offset - 2.0, prior.loadings, "test")
    texts = _texts()[:OWN]
    vecs, u = _latent(scorer, texts)
    ok = (np.random.default_rng(3).random(len(texts)) < success(u, truth)).astype(int)
    store = MemoryStore()
    for i, t in enumerate(texts):
        await store.add_label(_label(scorer, t, vecs[i], int(ok[i]), i))
    adapter = RouterAdapter(scorer, store, interval_s=3600, min_labels=40)
    before = scorer.model
    wrong = {"name": LOCAL, "offset": prior.offset + 3.0, "loadings": prior.loadings.tolist(), "labels": 500, "gateways": 20}
    assert adapter.offer_fleet(wrong) is not None
    result = await adapter.adapt_once()
    assert result.outcome == "kept" and result.ability is not None and result.ability["loss_fleet"] >= result.ability["loss_prior"], result
    assert scorer.model is before and f"local {LOCAL}: prior" in scorer.name
    # Not this gateway's model, or not this router's query parts: not even offered.
    assert adapter.offer_fleet({**wrong, "name": "another-model"}) is None and adapter.offer_fleet({**wrong, "loadings": [0.0]}) is None
    right = {**wrong, "offset": truth.offset}
    assert adapter.offer_fleet(right) is not None
    result = await adapter.adapt_once()
    assert result.outcome == "adopted" and isinstance(scorer, ClassifierScorer) and _head(scorer).pair()[0].offset == truth.offset


def test_a_gateway_that_starts_with_a_fleets_router_offers_its_ability(query_embedder: Embedder) -> None:
    """Not only a hot reload: a gateway (re)started on the published router judges the ability it carries."""
    from hybridgate.router import RoutingPolicy
    from hybridgate.serving.config import GatewayConfig
    from hybridgate.serving.node_stats import NodeStats
    from hybridgate.serving.router_upkeep import RouterUpkeep

    scorer = _scorer(query_embedder)
    prior = _head(scorer).prior_local()
    scorer.model.meta = {**scorer.model.meta, "local_ability": {"name": LOCAL, "offset": -3.0, "loadings": prior.loadings.tolist(), "labels": 200}}
    cfg = GatewayConfig.model_validate({"router": {"path": str(ACROSS), "local_model": LOCAL, "adapt_s": 3600}, "state": {"labels": True}})
    upkeep = RouterUpkeep(cfg, RoutingPolicy(scorer), MemoryStore(), NodeStats())
    assert upkeep.adapter is not None and upkeep.adapter.fleet is not None and upkeep.adapter.fleet.offset == -3.0
