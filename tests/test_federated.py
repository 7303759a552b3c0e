"""Federated training of the routing head in Flower's simulation runtime, on the project's fixture set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hybridgate.classifiers.data import RoutingData, load_routing_data
from hybridgate.classifiers.embedder import Embedder
from hybridgate.federated.apps import ServerPlan
from hybridgate.federated.partition import assign
from hybridgate.federated.simulation import Evaluator, Flipped, Malformed, central_and_local, run_federation
from hybridgate.federated.task import UpdateRejected, check_update
from tests.conftest import free_port

FIXTURE = Path(__file__).parent / "fixtures" / "routing"


@pytest.fixture(scope="module")
def split(query_embedder: Embedder) -> tuple[RoutingData, RoutingData, np.ndarray, np.ndarray]:
    data = load_routing_data(FIXTURE, "small-model", "large-model")
    # The fixture's train split is small; here half the rows train and half test, by prompt hash.
    keys = np.array([int(h[:8], 16) % 2 == 0 for h in data.sha256])
    train, test = data.take(keys), data.take(~keys)
    return train, test, query_embedder.encode(list(train.prompts)), query_embedder.encode(list(test.prompts))


def test_partitions_follow_the_protocol() -> None:
    groups = ["mmlu_b", "mmlu_a", "mmlu_c", "mmlu_a"]
    assert assign(["p1", "p2", "p3", "p4"], groups, 2, "by-subject").tolist() == [1, 0, 0, 0]
    iid = assign([f"q{i}" for i in range(1000)], ["g"] * 1000, 4, "iid")
    assert set(iid.tolist()) == {0, 1, 2, 3} and abs(np.bincount(iid).mean() - 250) < 1


def test_updates_are_checked_before_they_count() -> None:
    g = np.zeros(4)
    check_update(np.array([0.1, 0, 0, 0], dtype=np.float32), g, 1.0)
    for bad, why in [(np.zeros(3), "shape"), (np.array([np.nan, 0, 0, 0]), "non-finite"), (np.array([5.0, 0, 0, 0]), "bound")]:
        with pytest.raises(UpdateRejected, match=why):
            check_update(bad, g, 1.0)


def test_federation_beats_local_only_and_bounds_a_poisoned_gateway(split: tuple) -> None:
    train, test, x_tr, x_te = split
    k = 3
    gateways = assign(train.prompts, train.groups, k, "by-subject")  # one subject per gateway: strongly non-IID
    ev = Evaluator(x_te, test)
    central, local = central_and_local(x_tr, train.label, gateways, k, ev, epochs=40, lr=0.5)
    clean = run_federation(x_tr, train.label, gateways, k, ev, ServerPlan(rounds=4, local_epochs=10))
    fed = clean.outcome.history[-1]["apgr"]
    assert len(clean.outcome.history) == 5 and clean.bytes_per_gateway_round == 2 * 385 * 4
    # Each gateway alone knows one subject; together they learn which subjects need the cloud.
    local_mean = float(np.mean([r["apgr"] for r in local]))
    assert fed > local_mean + 0.05 and fed > central["apgr"] - 0.03, (fed, central, local)
    attacked = run_federation(
        x_tr, train.label, gateways, k, ev, ServerPlan(rounds=4, local_epochs=10, max_update_norm=2.0), attack=Flipped(frozenset({0}), scale=50.0)
    )
    assert attacked.outcome.rejected and all("bound" in why for _, why in attacked.outcome.rejected)
    # The poisoned gateway's updates never count: what is left is the federation of the two honest ones.
    assert attacked.outcome.history[-1]["apgr"] > np.mean([r["apgr"] for r in local])
    unbounded = run_federation(
        x_tr, train.label, gateways, k, ev, ServerPlan(rounds=4, local_epochs=10, max_update_norm=1e9), attack=Flipped(frozenset({0}), scale=50.0)
    )
    assert unbounded.outcome.history[-1]["apgr"] < attacked.outcome.history[-1]["apgr"]  # without the bound, the attack hurts


def test_simulate_cli_writes_the_table_and_publishes_a_loadable_router(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from hybridgate.classifiers.artifact import load_router
    from hybridgate.cli import app

    out, pub = tmp_path / "fl", tmp_path / "published"
    result = CliRunner().invoke(
        app,
        ["fl", "simulate", "--data", str(FIXTURE), "--weak", "small-model", "--strong", "large-model",
         "--gateways", "4", "--rounds", "2", "--attack", "0", "--dp-split", "2", "--dp-rounds", "2", "--dp-local-epochs", "2",
         "--out", str(out), "--publish", str(pub)],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "simulate.json").read_text())
    assert {"shipped", "central", "federated", "federated_fedprox", "federated_dp", "local_only"} <= set(summary)
    assert all({"apgr", "cpt50", "cpt80"} <= set(summary[k]) for k in ("shipped", "central", "federated", "local_only"))
    assert summary["federated_dp"]["gateways"] == 8 and summary["federated_dp"]["epsilon"] > 0
    assert summary["federated"]["bytes_per_gateway_round"] == 2 * 386 * 4  # the correction: a, b and one weight a dimension
    # The secure rows: SecAgg+ alone, and with each gateway clipping and noise on the sum, with their ε and costs.
    secagg, secagg_dp = summary["federated_secagg"], summary["federated_secagg_dp"]
    assert secagg["secure_aggregation"] and secagg["rounds_aggregated"] == 2 and secagg["dropouts_survived"] == 0
    assert abs(secagg["apgr"] - summary["federated"]["apgr"]) < 0.01, "the sum is exact up to quantisation"
    assert secagg_dp["gateways"] == 8 and 0 < secagg_dp["epsilon"] and "epsilon" not in secagg
    # Two of the eight have no labels (the fixture has three subjects): they send "no change", not an error.
    assert secagg_dp["dropouts_survived"] == 0 and secagg_dp["rounds_aggregated"] == 2
    assert secagg["measured_bytes_per_gateway_round"] > summary["federated"]["measured_bytes_per_gateway_round"] > 2 * 386 * 4
    assert (out / "apgr_rounds.png").read_bytes()[:4] == b"\x89PNG"
    # What it publishes is the router that ships with the fleet's correction on top, not another head.
    model = load_router(pub, embedder="all-MiniLM-L6-v2-static", dim=384)
    assert model.meta["training"]["federated"] is True and model.head.kind == "blend" and model.fleet is not None


def test_differential_privacy_reports_its_epsilon(split: tuple) -> None:
    train, test, x_tr, x_te = split
    gateways = assign(train.prompts, train.groups, 3, "by-subject")
    ev = Evaluator(x_te, test)
    eps = []
    for noise in (1.0, 4.0):
        res = run_federation(x_tr, train.label, gateways, 3, ev, ServerPlan(rounds=2, local_epochs=5, dp_noise=noise, dp_clip=0.5))
        assert res.outcome.epsilon is not None and np.isfinite(res.outcome.epsilon)
        eps.append(res.outcome.epsilon)
    assert eps[1] < eps[0]  # more noise, less privacy spent


def test_the_fleet_node_weights_check_every_reply_and_resist_a_poisoned_minority(tmp_path: Path) -> None:
    from flwr.app import ArrayRecord, MetricRecord, RecordDict

    from hybridgate.classifiers.node_weights import NodeWeights
    from hybridgate.federated.node_weights import checked_reply, combine, file_source

    def reply(values: list[float], answers: object) -> RecordDict:
        return RecordDict({"arrays": ArrayRecord([np.asarray(values, dtype=np.float64)]), "metrics": MetricRecord({"answers": answers})})

    honest = [reply([10.0, 0.5 + 0.01 * i, 1.2, 2.0], 200) for i in range(7)]
    malicious = [
        reply([10_000.0, 10.0, 10.0, 10.0], 100_000_000),  # extreme but within bounds, and a huge count: capped, outvoted
        reply([0.0, 0.0, 0.0, 0.0], 500),
        reply([1.0, float("nan"), 1.0, 1.0], 500),  # not finite
        reply([1.0, 1.0, 1.0], 500),  # three numbers
        reply([1.0, 50.0, 1.0, 1.0], 500),  # out of bounds
        reply([1.0, 1.0, 1.0, 1.0], -3),  # a negative count
        RecordDict({"metrics": MetricRecord({"answers": 50})}),  # a count and no weights
        reply([1.0, 1.0, 1.0, 1.0], 5),  # too few answers to count
    ]
    assert checked_reply(malicious[0], 20) == (NodeWeights(10_000.0, 10.0, 10.0, 10.0), 100_000)
    assert [checked_reply(m, 20) for m in malicious[2:]] == [None] * 6
    fleet, report = combine(honest + malicious, min_answers=20)
    assert report == {"replied": 15, "used": 9, "answers": 7 * 200 + 100_000 + 500}
    assert fleet == NodeWeights(10.0, 0.53, 1.2, 2.0), "the median of honest gateways stands"
    assert combine([], 20) == (None, {"replied": 0, "used": 0, "answers": 0})
    saved = tmp_path / "nodes.json"
    saved.write_text('{"object": "hybridgate.nodes", "weights": {"intercept_ms": 1, "cpu": 0.5, "ai": 1, "nl": 2}, "answers_learnt": 40}')
    assert file_source(saved) == (NodeWeights(1.0, 0.5, 1.0, 2.0), 40)


def test_a_malformed_gateway_cannot_break_the_fleet_with_or_without_dp(split: tuple) -> None:
    train, test, x_tr, x_te = split
    k = 3
    gateways = assign(train.prompts, train.groups, k, "by-subject")
    ev = Evaluator(x_te, test)
    # Non-finite weights and a NaN count: dropped by the checked average, the two honest gateways carry on.
    plain = run_federation(x_tr, train.label, gateways, k, ev, ServerPlan(rounds=2, local_epochs=5), attack=Malformed(frozenset({0})))
    assert plain.outcome.final is not None and np.isfinite(plain.outcome.final).all() and np.abs(plain.outcome.final).sum() > 0
    assert len(plain.outcome.rejected) == 2 and all("non-finite" in why for _, why in plain.outcome.rejected)
    counted = run_federation(
        x_tr, train.label, gateways, k, ev, ServerPlan(rounds=2, local_epochs=5), attack=Malformed(frozenset({0}), weights=0.0, examples=-5)
    )
    assert any("example count -5" in why for _, why in counted.outcome.rejected)
    # Under DP the accountant needs every reply: the malformed update counts as no change, and epsilon is still reported.
    dp = run_federation(
        x_tr, train.label, gateways, k, ev, ServerPlan(rounds=2, local_epochs=5, dp_noise=0.5, dp_clip=0.5), attack=Malformed(frozenset({0}), examples=1e12)
    )
    assert dp.outcome.final is not None and np.isfinite(dp.outcome.final).all() and dp.outcome.epsilon is not None
    assert len(dp.outcome.rejected) == 2


def test_a_gateway_refuses_a_round_outside_its_bounds(split: tuple) -> None:
    train, test, x_tr, x_te = split
    k = 2
    gateways = assign(train.prompts, train.groups, k, "iid")
    greedy = run_federation(x_tr, train.label, gateways, k, Evaluator(x_te, test), ServerPlan(rounds=1, local_epochs=10_000))
    assert greedy.outcome.final is not None and not greedy.outcome.final.any(), "every gateway refused: the model did not move"


def test_the_rules_each_side_keeps() -> None:
    from hybridgate.federated.checks import (
        MAX_EXAMPLES,
        ReplyRejected,
        RequestRejected,
        checked_count,
        checked_train_request,
        checked_weights,
        pooled_quantiles,
    )

    assert checked_count(120) == 120 and checked_count(1e12) == MAX_EXAMPLES and checked_count(7.0) == 7
    for bad in (0, -3, 2.5, float("nan"), float("inf"), True, "9", None):
        with pytest.raises(ReplyRejected):
            checked_count(bad)
    good = np.linspace(0.1, 0.9, 101)
    hostile = [
        (good[::-1], 50),  # decreasing
        (np.r_[good[:-1], 1.5], 50),  # outside [0, 1]
        (np.r_[good[:-1], np.nan], 50),
        (good[:50], 50),  # too short
        ("0.5", 50),
        (good, 10**12),  # counted, but capped: it cannot outweigh the honest one by more than the cap
    ]
    pooled, refused = pooled_quantiles([(good, 100), *hostile])
    assert len(refused) == 5 and pooled is not None and np.allclose(pooled, good)
    assert pooled_quantiles([(good[::-1], 5)]) == (None, ["score quantiles must not decrease"])
    w = np.zeros(5)
    assert checked_train_request({"local-epochs": 5, "lr": 0.5}, w, 4) == (5, 0.5, 0.0)
    for cfg in ({"local-epochs": 0}, {"local-epochs": 51}, {"local-epochs": 2.5}, {"lr": 0.0}, {"lr": 50.0}, {"lr": float("nan")},
                {"proximal-mu": -1.0}, {"proximal-mu": 11.0}, {"local-epochs": True}):
        with pytest.raises(RequestRejected):
            checked_train_request(cfg, w, 4)
    for vector, dim in ((np.zeros(4), 4), (np.zeros((2, 5)), 4), (np.full(5, np.nan), 4), (np.full(5, 1e4), 4)):
        with pytest.raises(RequestRejected):
            checked_weights(vector, dim)
    assert checked_weights(np.ones(7), None).shape == (7,)


def test_the_gateway_key_never_travels_on_a_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from hybridgate.cli import app
    from hybridgate.federated.deploy import gateway_headers

    monkeypatch.delenv("HYBRIDGATE_API_KEY", raising=False)
    assert gateway_headers({}) == {}
    monkeypatch.setenv("HYBRIDGATE_API_KEY", "from-env")
    assert gateway_headers({}) == {"Authorization": "Bearer from-env"}
    key = tmp_path / "key"
    key.write_text("from-file\n")
    assert gateway_headers({"api-key-file": str(key)}) == {"Authorization": "Bearer from-file"}
    with pytest.raises(ValueError, match="process list"):
        gateway_headers({"api-key": "on-the-command-line"})
    text = CliRunner().invoke(app, ["fl", "client", "--help"], terminal_width=200).output
    assert "--api-key-file" in text and "--api-key " not in text
    missing = CliRunner().invoke(app, ["fl", "client", "--api-key-file", str(tmp_path / "nope")])
    assert missing.exit_code != 0 and "no such file" in missing.output


def test_a_client_whose_superlink_is_gone_stops_with_one_line() -> None:
    """The README walk found ``fl client`` retrying for ever once the server had exited: it gives up after
    --retry-s, with one line instead of Flower's exit report."""
    import subprocess
    import sys


    hg = str(Path(sys.executable).parent / "hybridgate")
    port = free_port()
    done = subprocess.run([hg, "fl", "client", "--superlink", f"127.0.0.1:{port}", "--retry-s", "2", "--port", str(free_port())],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: the SuperLink at 127.0.0.1:{port} did not answer for 2 s: the federation is over or its server is gone; stopping"
    )
    assert "Exit Code" not in done.stderr and "Traceback" not in done.stderr


def test_a_fleet_adapts_the_shipped_router_better_than_each_gateway_alone() -> None:
    from hybridgate.federated.fleet_adaptation import Setting, fleet_adaptation, spread

    rng = np.random.default_rng(3)

    def rows(n: int, tag: str) -> tuple[np.ndarray, RoutingData]:
        x = rng.normal(size=(n, 8)).astype(np.float32)
        needed = x[:, 0] + 0.3 * rng.normal(size=n) > 0.6  # the shipped router never learnt this direction
        weak = ~needed & (rng.random(n) < 0.9)
        strong = needed | (rng.random(n) < 0.9)
        data = RoutingData(tuple(f"{tag}{i}" for i in range(n)), ("g",) * n, weak, strong, "small", "large", "synthetic", 0)
        return x, data

    x_tr, train = rows(96, "train")
    x_te, test = rows(600, "test")
    gateways, k = spread(len(train), 12)
    shipped_train, shipped_test = rng.uniform(0.3, 0.7, len(train)), rng.uniform(0.3, 0.7, len(test))
    r = fleet_adaptation(
        Setting(shipped_train, x_tr, train.label, gateways, k, shipped_test, x_te, test), ServerPlan(rounds=10, local_epochs=5, lr=0.5)
    )
    assert r["gateways"] == 8 and r["labels_per_gateway"] == [12, 12]
    assert r["federated"] > r["alone"] + 0.05 and r["federated"] > r["shipped"] + 0.1, r


def test_a_norm_filter_relative_to_the_round_needs_no_bound_to_tune(split: tuple) -> None:
    train, test, x_tr, x_te = split
    k = 3
    gateways = assign(train.prompts, train.groups, k, "by-subject")
    ev = Evaluator(x_te, test)
    plan = ServerPlan(rounds=3, local_epochs=10, max_update_norm=1e9, relative_norm=3.0)
    filtered = run_federation(x_tr, train.label, gateways, k, ev, plan, attack=Flipped(frozenset({0}), scale=50.0))
    assert filtered.outcome.rejected and all("median" in why for _, why in filtered.outcome.rejected)
    assert len(filtered.outcome.rejected) == 3, "the poisoned gateway, every round, and nobody else"
