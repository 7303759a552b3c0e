"""The weighted node choice: parts, the online fit, the fleet's weights, and what the gateway measures and shows."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridgate.classifiers.node_weights import (
    LOWER,
    UPPER,
    NodeFeatures,
    NodeWeights,
    NodeWeightsError,
    OnlineNodeRegression,
)
from hybridgate.router import Route, RouteContext
from hybridgate.router.node_choice import score_nodes
from hybridgate.serving.node_stats import NodeStats, read_gauges
from hybridgate.testing.stub_upstream import StubBehaviour, create_stub_app
from tests.conftest import ServerThread, post_chat


def test_parts_are_the_wait_the_generation_and_the_round_trip() -> None:
    f = NodeFeatures(load=2, ms_per_token=10.0, rtt_ms=30.0)
    assert f.parts(100).tolist() == [2000.0, 1000.0, 30.0]
    scores = score_nodes({"busy-fast": f, "idle-slow": NodeFeatures(0, 25.0, 5.0)}, NodeWeights(), 100)
    assert scores["busy-fast"].total_ms == pytest.approx(3030.0) and scores["idle-slow"].total_ms == pytest.approx(2505.0)
    assert scores["busy-fast"].parts_ms == {"intercept": 0.0, "cpu": 2000.0, "ai": 1000.0, "nl": 30.0}
    ctx = RouteContext({"busy-fast": Route.LOCAL, "idle-slow": Route.LOCAL}, frozenset({"busy-fast", "idle-slow"}),
                       latency_ms={"busy-fast": 5.0, "idle-slow": 50.0}, node_scores=scores)
    assert ctx.available(Route.LOCAL) == ["idle-slow", "busy-fast"], "the weighted score decides, not the first-token latency"
    assert RouteContext(ctx.backends, ctx.healthy, latency_ms=ctx.latency_ms).available(Route.LOCAL) == ["busy-fast", "idle-slow"]


def test_the_fit_finds_the_weights_that_made_the_times() -> None:
    rng = np.random.default_rng(0)
    truth = NodeWeights(intercept_ms=40.0, cpu=0.35, ai=1.2, nl=2.0)  # a batching node: a queued request waits a third
    reg = OnlineNodeRegression(NodeWeights(), forget=1.0, prior_strength=1.0)
    for _ in range(600):
        parts = NodeFeatures(float(rng.integers(0, 6)), float(rng.uniform(5, 40)), float(rng.uniform(1, 80))).parts(int(rng.integers(16, 256)))
        reg.observe(parts, float(truth.predict_ms(parts)[0] + rng.normal(0, 20)))
    w = reg.weights
    assert w.cpu == pytest.approx(0.35, abs=0.05) and w.ai == pytest.approx(1.2, abs=0.05) and w.nl == pytest.approx(2.0, abs=0.3)
    assert reg.error(w) < reg.error(NodeWeights())  # type: ignore[operator]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(-1e12, 1e12) | st.just(float("nan")) | st.just(float("inf")), st.floats(0, 1e6), st.floats(-1e9, 1e12) | st.just(float("nan"))), max_size=40))
def test_no_run_of_answers_throws_the_weights_out_of_bounds(rows: list[tuple[float, float, float]]) -> None:
    reg = OnlineNodeRegression()
    for load, speed, total in rows:
        reg.observe(NodeFeatures(load, speed, 1.0).parts(50), total)
        a = reg.weights.array()
        assert np.isfinite(a).all() and (a >= LOWER).all() and (a <= UPPER).all()


def test_weights_from_elsewhere_are_checked_and_taken_only_when_they_predict_better() -> None:
    for bad in ([1.0, 2.0], [0.0, float("nan"), 1.0, 1.0], [0.0, -1.0, 1.0, 1.0], [0.0, 1.0, 1e9, 1.0]):
        with pytest.raises(NodeWeightsError):
            NodeWeights.from_array(bad)
    truth = NodeWeights(cpu=0.5, ai=1.0, nl=1.0)
    reg = OnlineNodeRegression(forget=1.0, prior_strength=1.0)
    rng = np.random.default_rng(1)
    for _ in range(100):
        parts = NodeFeatures(float(rng.integers(0, 5)), 10.0, 5.0).parts(100)
        reg.observe(parts, float(truth.predict_ms(parts)[0]))
    refused = reg.offer(NodeWeights(cpu=3.0))
    assert not refused.taken, "a fleet vector that predicts this gateway worse is refused"
    assert refused.offered_error is not None and refused.own_error is not None and refused.offered_error > refused.own_error
    assert reg.offer(NodeWeights(cpu=0.5)).taken and reg.prior == NodeWeights(cpu=0.5)
    fresh = OnlineNodeRegression()
    assert fresh.offer(NodeWeights(cpu=3.0)).taken and fresh.weights == NodeWeights(cpu=3.0), "no answers yet: the fleet knows better"


def test_prometheus_gauges_are_read_and_hostile_text_is_not() -> None:
    text = (
        "# HELP llamacpp:requests_processing x\n# TYPE llamacpp:requests_processing gauge\nllamacpp:requests_processing 2\n"
        'llamacpp:requests_deferred{slot="a"} 3.0\nllamacpp:requests_deferred{slot="b"} 1 1700000000\nother 99\nllamacpp:requests_processing NaN\n'
    )
    assert read_gauges(text, ["llamacpp:requests_processing", "llamacpp:requests_deferred"]) == 6.0
    assert read_gauges("nothing here\n", ["x"]) is None
    assert read_gauges("x -5\n", ["x"]) == 0.0
    started = time.perf_counter()
    assert read_gauges("x{" + "a=\"b\"," * 50_000 + "\n" + "x" * 200_000 + " 1\n", ["x"]) is None
    assert time.perf_counter() - started < 1.0


def test_node_stats_count_load_and_measure_speed_with_the_load_divided_out() -> None:
    stats = NodeStats(default_tokens_per_s=20.0)
    stats.add("edge", tokens_per_s=None)
    stats.add("gpu", accelerator=True)
    assert stats.features("edge").ms_per_token == 50.0 and stats.features("gpu").ms_per_token == 12.5
    first = stats.begin("edge")
    second = stats.begin("edge")
    assert second is not None and second.features.load == 1.0 and stats.load("edge") == 2.0
    stats.finish(first, 10)
    stats.finish(second, 10)
    stats.finish(second, 10)  # twice: counted once
    assert stats.nodes["edge"].in_flight == 0 and stats.nodes["edge"].speed_measured == 2 and stats.regression.observed == 2
    assert stats.features("edge").ms_per_token < 5.0, "two instant answers: a fast node, whatever the guess was"
    stats.observe_load("edge", 7.0)
    assert stats.load("edge") == 7.0
    stats.abandon(stats.begin("edge"))
    assert stats.nodes["edge"].in_flight == 0


def test_the_gateway_chooses_by_reported_load_and_shows_each_node(make_gateway: Callable[..., ServerThread], stub) -> None:
    busy = StubBehaviour(reply="busy node answers", external_load=6, keep_bodies=False)
    idle = StubBehaviour(reply="idle node answers", keep_bodies=False)
    with ServerThread(create_stub_app(busy)) as b, ServerThread(create_stub_app(idle)) as i:
        edges = [
            {"name": n, "model": "openai/edge", "route": "local", "api_base": f"{srv.url}/v1", "transport": "openai", "max_retries": 0,
             "tokens_per_s": 50, "load_metrics": ["stub_requests_running"]}
            for n, srv in (("edge-busy", b), ("edge-idle", i))
        ]
        gw = make_gateway(edge_nodes=edges, health={"interval_s": 0.1})
        deadline = time.monotonic() + 10
        while gw.gateway.nodes.load("edge-busy") < 6 and time.monotonic() < deadline:  # type: ignore[attr-defined]
            time.sleep(0.05)
        r = httpx.post(f"{gw.url}/v1/route", json={"model": "hybridgate/local", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20})
        d = r.json()
        assert d["backend"] != "edge-busy" and d["fallbacks"][-1] == "edge-busy", d
        busy_node = next(n for n in d["nodes"] if n["name"] == "edge-busy")
        assert busy_node["features"]["load"] == 6 and busy_node["parts_ms"]["cpu"] == pytest.approx(6 * 20 * 20.0)
        assert busy_node["expected_ms"] > max(n["expected_ms"] for n in d["nodes"] if n["name"] != "edge-busy")
        nodes = httpx.get(f"{gw.url}/v1/hybridgate/nodes").json()
        assert nodes["choice"] == "weighted" and set(nodes["nodes"]) >= {"local", "edge-busy", "edge-idle"} and nodes["nodes"]["edge-busy"]["rtt_ms"] > 0
        answered = post_chat(gw.url, {"model": "hybridgate/local", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
        assert answered.status_code == 200
        assert gw.gateway.nodes.regression.observed == 1  # type: ignore[attr-defined]


def test_a_published_router_brings_fleet_weights_the_gateway_judges(make_gateway: Callable[..., ServerThread]) -> None:
    gw = make_gateway()
    g = gw.gateway  # type: ignore[attr-defined]
    assert not g.offer_node_weights({"intercept_ms": 0, "cpu": 99, "ai": 1, "nl": 1}), "out of bounds: kept its own"
    assert not g.offer_node_weights({"cpu": 1}), "incomplete: kept its own"
    assert g.offer_node_weights({"intercept_ms": 5, "cpu": 0.5, "ai": 1.1, "nl": 1.5})
    assert g.nodes.weights == NodeWeights(5, 0.5, 1.1, 1.5)
