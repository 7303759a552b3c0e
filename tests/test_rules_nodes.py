"""The user's rules and several edge nodes over real HTTP: dry runs, deadlines, dead nodes, budgets in Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import httpx

from hybridgate import Client
from tests.conftest import ServerThread, free_port, post_chat

Q = [{"role": "user", "content": "Explain how a heat pump works."}]


def _route(url: str, model: str = "hybridgate/auto", **headers: str) -> dict:
    r = httpx.post(f"{url}/v1/route", json={"model": model, "messages": Q}, headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def test_dry_run_returns_the_decision_and_generates_nothing(make_gateway: Callable[..., ServerThread], stub) -> None:
    srv = make_gateway(router={"threshold": 0.0})
    d = _route(srv.url)
    assert d["object"] == "hybridgate.route" and d["route"] == "cloud" and d["backend"] == "cloud"
    assert d["threshold"] == 0.0 and d["score"] is not None and d["router"] and d["reasons"] and d["prompt_tokens"] > 0
    assert stub[1].received == []
    with Client(srv.url) as c:
        rd = c.route("My card is 4111 1111 1111 1111, can you check it?")
        assert rd.route == "local" and rd.personal_data == ("card",)
        assert c.route("hi", privacy="strict").route == "local"


def test_gray_band_is_answered_collaboratively(make_gateway: Callable[..., ServerThread], stub) -> None:
    srv = make_gateway(router={"threshold": 1.0, "t_local": 0.0, "mode": "draft-refine"})
    d = _route(srv.url)
    assert d["route"] == "collaborative" and d["mode"] == "draft-refine" and d["cloud_backend"] == "cloud"
    r = post_chat(srv.url, {"model": "hybridgate/auto", "messages": Q, "max_tokens": 6})
    assert r.headers["x-hybridgate-route"] == "collaborative" and r.json()["hybridgate"]["collaboration"]["cloud_calls"] == 1


def test_deadline_moves_a_cloud_query_to_the_faster_local_model(make_gateway: Callable[..., ServerThread], stub) -> None:
    stub[1].delay_s = 0.4
    srv = make_gateway(router={"threshold": 0.0})
    post_chat(srv.url, {"model": "hybridgate/cloud", "messages": Q, "max_tokens": 2})  # the cloud is measured: >= 400 ms
    post_chat(srv.url, {"model": "hybridgate/local", "messages": Q, "max_tokens": 1})
    est = srv.gateway.latency.snapshot()  # type: ignore[attr-defined]
    assert est["cloud"] >= 400 > est["local"]
    assert _route(srv.url)["route"] == "cloud"
    d = _route(srv.url, **{"x-hybridgate-deadline-ms": "300"})
    assert d["route"] == "local" and "deadline 300 ms: local" in d["reasons"][-1]
    bad = post_chat(srv.url, {"model": "hybridgate/auto", "messages": Q}, headers={"x-hybridgate-deadline-ms": "soon"})
    assert bad.status_code == 400


def test_dead_edge_node_is_skipped_then_rested(make_gateway: Callable[..., ServerThread], stub) -> None:
    dead = {"name": "edge-dead", "model": "openai/x", "route": "local", "api_base": f"http://127.0.0.1:{free_port()}/v1",
            "transport": "openai", "timeout_s": 2, "max_retries": 0}
    srv = make_gateway(edge_nodes=[dead], health={"interval_s": 0.2})
    # Never measured, the edge node would be tried first; failover takes the in-process model before the first token.
    r = post_chat(srv.url, {"model": "hybridgate/local", "messages": Q, "max_tokens": 3})
    assert r.status_code == 200 and r.headers["x-hybridgate-backend"] == "local"
    deadline = time.monotonic() + 10
    while srv.gateway.backends["edge-dead"].health.healthy and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.1)
    assert not srv.gateway.backends["edge-dead"].health.healthy  # type: ignore[attr-defined]
    d = _route(srv.url, "hybridgate/local")
    assert d["backend"] == "local" and "edge-dead" not in d["fallbacks"]


def test_lowest_latency_node_is_chosen_and_the_others_kept_for_failover(make_gateway: Callable[..., ServerThread], stub) -> None:
    url, cloud = stub
    edge = {"name": "edge-box", "model": "openai/edge", "route": "local", "api_base": f"{url}/v1", "transport": "openai", "max_retries": 0}
    srv = make_gateway(edge_nodes=[edge], nodes={"choice": "latency"})
    lat = srv.gateway.latency  # type: ignore[attr-defined]
    lat.observe("local", 0.9)
    lat.observe("edge-box", 0.05)
    d = _route(srv.url, "hybridgate/local")
    assert d["backend"] == "edge-box" and d["fallbacks"] == ["local"]
    r = post_chat(srv.url, {"model": "hybridgate/local", "messages": Q, "max_tokens": 3})
    assert r.headers["x-hybridgate-backend"] == "edge-box" and r.json()["choices"][0]["message"]["content"] == cloud.reply
    cloud.mode = "error500"  # the edge box fails before its first token: the next node answers
    r = post_chat(srv.url, {"model": "hybridgate/local", "messages": Q, "max_tokens": 3})
    assert r.status_code == 200 and r.headers["x-hybridgate-backend"] == "local" and r.headers["x-hybridgate-fallback"] == "edge-box"


def test_budget_spent_in_redis_flips_collaborative_and_cloud_to_local(
    make_gateway: Callable[..., ServerThread], stub, redis_url: str
) -> None:
    key = f"k-{uuid.uuid4().hex[:12]}"  # a fresh key: the Redis database outlives the test
    srv = make_gateway(
        server={"api_keys": [key]},
        state={"redis_url": redis_url},
        cloud={"cost_per_1k_prompt_usd": 1.0, "cost_per_1k_completion_usd": 1.0},
        budgets={"per_key_daily_usd": {key: 0.1}},
        router={"threshold": 1.0, "t_local": 0.0},
    )
    auth = {"Authorization": f"Bearer {key}"}
    # Pinned calls spend until what is left cannot cover another call's worst case: then they get 429.
    statuses = [post_chat(srv.url, {"model": "hybridgate/redact", "messages": Q, "max_tokens": 5}, headers=auth) for _ in range(8)]
    assert statuses[0].status_code == 200 and statuses[0].json()["hybridgate"]["cost_usd"] > 0.001
    assert statuses[-1].status_code == 429 and statuses[-1].json()["error"]["code"] == "budget_exhausted"
    state = srv.gateway.state.describe()  # type: ignore[attr-defined]
    assert state["kind"] == "redis" and not state["degraded"]
    r = post_chat(srv.url, {"model": "hybridgate/auto", "messages": Q, "max_tokens": 5}, headers=auth)  # the same worst case
    info = r.json()["hybridgate"]
    assert r.headers["x-hybridgate-route"] == "local"
    assert "budget" in info["decided"]["reasons"][-1] or "budget" in (info.get("fallback") or {}).get("reason", "")


def test_thresholds_follow_the_quantiles_of_recent_scores(make_gateway: Callable[..., ServerThread], stub) -> None:
    srv = make_gateway(router={"cloud_share": 0.25, "gray_share": 0.25, "recalibrate_every": 1, "recalibrate_window": 400})
    gw = srv.gateway  # type: ignore[attr-defined]
    before = gw.policy.threshold

    async def seed() -> None:  # 400 logged decisions with scores spread evenly over [0, 1)
        for i in range(400):
            await gw.state.log_decision({"id": f"seed-{i}", "decided": {"score": i / 400}})

    asyncio.run(seed())  # the in-process store is not bound to the server's event loop
    _route(srv.url)  # one scored decision triggers the re-calibration
    deadline = time.monotonic() + 5
    while gw.policy.threshold == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert abs(gw.policy.threshold - 0.75) < 0.01 and abs(gw.policy.t_local - 0.5) < 0.01
