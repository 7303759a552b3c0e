"""Counters, decision log and cache against a real Redis, and Redis going away mid-run."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx
import pytest
import redis

from hybridgate.serving.state.base import key_id
from tests.conftest import RedisServer, ServerThread, post_chat

MSG = [{"role": "user", "content": "hello"}]


@pytest.fixture
def shared_redis(redis_url: str) -> Iterator[redis.Redis]:
    yield redis.Redis.from_url(redis_url)


def test_counters_log_and_cache_live_in_redis(
    make_gateway: Callable[..., ServerThread], shared_redis: redis.Redis, redis_url: str
) -> None:
    srv = make_gateway(
        server={"api_keys": ["key-a", "key-b"]},
        state={"redis_url": redis_url, "cache_enabled": True, "cache_ttl_s": 60},
        cloud={"cost_per_1k_prompt_usd": 0.5, "cost_per_1k_completion_usd": 1.0},
    )
    auth = {"Authorization": "Bearer key-a"}
    body = {"model": "hybridgate/cloud", "messages": MSG, "max_tokens": 5, "temperature": 0}
    first = post_chat(srv.url, body, headers=auth)
    second = post_chat(srv.url, body, headers=auth)
    assert first.headers["x-hybridgate-cache"] == "miss" and second.headers["x-hybridgate-cache"] == "hit"
    assert second.json()["choices"][0]["message"]["content"] == first.json()["choices"][0]["message"]["content"]
    usage_keys = [k.decode() for k in shared_redis.keys("hybridgate:usage:*")]
    assert len(usage_keys) == 1 and usage_keys[0].endswith(key_id("key-a")), "counters are kept under a digest of the key"
    h = {k.decode(): v.decode() for k, v in shared_redis.hgetall(usage_keys[0]).items()}
    assert h["requests"] == "2" and int(h["prompt_tokens"]) == 10
    assert float(h["cloud_cost_usd"]) == pytest.approx(10 / 1000 * 0.5 + 5 / 1000 * 1.0)
    assert shared_redis.llen("hybridgate:decisions") == 2
    assert len(shared_redis.keys("hybridgate:cache:*")) == 1
    assert shared_redis.ttl(shared_redis.keys("hybridgate:cache:*")[0]) <= 60
    # Another key replaying the same prompt gets its own answer, not key-a's (nor the fact that key-a asked).
    other = post_chat(srv.url, body, headers={"Authorization": "Bearer key-b"})
    assert other.headers["x-hybridgate-cache"] == "miss" and len(shared_redis.keys("hybridgate:cache:*")) == 2


def test_two_gateways_share_one_budget_through_redis(
    make_gateway: Callable[..., ServerThread], shared_redis: redis.Redis, redis_url: str
) -> None:
    sections = dict(
        server={"api_keys": ["k"]},
        state={"redis_url": redis_url},
        cloud={"cost_per_1k_prompt_usd": 1.0, "cost_per_1k_completion_usd": 1.0},
        budgets={"default_daily_usd": 0.04},
    )
    a, b = make_gateway(**sections), make_gateway(**sections)
    auth = {"Authorization": "Bearer k"}
    body = {"model": "cloud", "messages": MSG, "max_tokens": 5}  # at most 0.036 USD (31 + 5 tokens), costs 0.015: one fits, two do not
    assert post_chat(a.url, body, headers=auth).status_code == 200
    assert post_chat(b.url, body, headers=auth).status_code == 429
    # Nothing stays set aside once the call is accounted: the hash holds the spend and a zero reservation.
    h = {k.decode(): v.decode() for k, v in shared_redis.hgetall(shared_redis.keys("hybridgate:usage:*")[0]).items()}
    assert float(h["reserved_usd"]) == pytest.approx(0.0, abs=1e-9) and float(h["cloud_cost_usd"]) > 0


def test_redis_going_away_mid_run(make_gateway: Callable[..., ServerThread]) -> None:
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url())
        srv = make_gateway(state={"redis_url": server.url(), "reconnect_interval_s": 0.3})
        body = {"model": "hybridgate/local", "messages": MSG, "max_tokens": 2}
        assert post_chat(srv.url, body).status_code == 200
        assert httpx.get(f"{srv.url}/readyz").json()["degraded"] is False
        assert client.llen("hybridgate:decisions") == 1

        server.stop()
        r = post_chat(srv.url, body)
        assert r.status_code == 200, "requests must still succeed without Redis"
        ready = httpx.get(f"{srv.url}/readyz").json()
        assert ready["degraded"] is True and ready["state"]["last_error"]
        assert "hybridgate_state_degraded 1.0" in httpx.get(f"{srv.url}/metrics").text

        server.start()
        # Waits on the condition, not on a guess of the reconnect interval: each /readyz pings the store, which
        # tries Redis again once reconnect_interval_s is over; a store that never went back fails at the deadline.
        deadline = time.monotonic() + 30
        while httpx.get(f"{srv.url}/readyz").json()["degraded"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert httpx.get(f"{srv.url}/readyz").json()["degraded"] is False, "the store went back to Redis"
        assert post_chat(srv.url, body).status_code == 200
        assert httpx.get(f"{srv.url}/readyz").json()["degraded"] is False
        assert client.llen("hybridgate:decisions") >= 1, "writes go to Redis again once it is back"


def test_a_redis_outage_does_not_reset_a_budget(make_gateway: Callable[..., ServerThread]) -> None:
    """Before, counters fell back to an empty memory store: a Redis outage gave every key a fresh budget."""
    with RedisServer() as server:
        srv = make_gateway(
            server={"api_keys": ["k"]},
            state={"redis_url": server.url(), "reconnect_interval_s": 30},
            cloud={"cost_per_1k_prompt_usd": 1.0, "cost_per_1k_completion_usd": 1.0},
            budgets={"default_daily_usd": 0.04},
        )
        auth = {"Authorization": "Bearer k"}
        body = {"model": "cloud", "messages": MSG, "max_tokens": 5}
        assert post_chat(srv.url, body, headers=auth).status_code == 200  # spends 0.015 of 0.04, recorded in Redis
        assert post_chat(srv.url, {**body, "model": "hybridgate/local"}, headers=auth).status_code == 200  # reads the spend
        server.stop()
        refused = post_chat(srv.url, body, headers=auth)
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "budget_exhausted", refused.text


def test_a_redis_outage_does_not_reset_the_energy_budget_either() -> None:
    """While Redis is away, energy is reserved in memory against the joules Redis last reported (not its dollars)."""
    import asyncio

    from hybridgate.serving.state.memory import MemoryStore
    from hybridgate.serving.state.redis_store import RedisStore
    from hybridgate.serving.state.resilient import ResilientStore

    kid = key_id("k")
    with RedisServer() as server:

        async def run() -> None:
            store = ResilientStore(RedisStore(server.url(), timeout_s=0.3), MemoryStore(), reconnect_interval_s=30)
            await store.record_usage(kid, prompt_tokens=1, completion_tokens=1, cloud_cost_usd=0.0, energy_joules=90.0)
            assert (await store.usage_today(kid)).energy_joules == 90.0  # read while Redis answers
            server.stop()
            assert not await store.reserve(kid, 20.0, 100.0, "joules"), "90 J spent in Redis: 20 more do not fit"
            assert store.degraded and await store.reserve(kid, 10.0, 100.0, "joules")
            assert not await store.reserve(kid, 1.0, 100.0, "joules"), "the 10 J set aside in memory count"
            assert await store.reserve(kid, 0.05, 0.1), "dollars are a budget of their own"
            await store.release(kid, 10.0, "joules")
            assert await store.reserve(kid, 10.0, 100.0, "joules"), "given back in memory, where it was set aside"
            await store.aclose()

        asyncio.run(run())
