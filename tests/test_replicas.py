"""Many gateways on one Redis: budget leases that a dead replica cannot keep, and a fleet of real `hybridgate serve`
processes behind a round-robin client, one of them killed mid-run, reconciled against Redis."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybridgate.serving.node_share import NodeShare
from hybridgate.serving.node_stats import NodeStats
from hybridgate.serving.state.base import key_id
from hybridgate.serving.state.redis_store import RedisStore
from hybridgate.testing.stub_upstream import StubBehaviour
from tests.conftest import RedisServer, free_port

KEY = key_id("k1")


# -- leases ---------------------------------------------------------------------------------------
def _leases(client: redis.Redis) -> list[str]:
    return [m.decode() for k in client.keys("hybridgate:leases:*") for m in client.zrange(k, 0, -1)]


def test_a_dead_replicas_reservation_expires_and_a_live_one_is_renewed(redis_url: str) -> None:
    """A reservation is a lease: renewed while its holder lives (past several TTLs), dropped once it stops."""
    client = redis.Redis.from_url(redis_url)

    async def run() -> None:
        live = RedisStore(redis_url, reservation_ttl_s=0.3, replica_id="live")
        dead = RedisStore(redis_url, reservation_ttl_s=0.3, replica_id="dead")
        other = RedisStore(redis_url, reservation_ttl_s=0.3, replica_id="other")
        assert await live.reserve(KEY, 0.04, 0.1) and await dead.reserve(KEY, 0.04, 0.1)
        assert await live.reserve(KEY, 40.0, 100.0, "joules") and await dead.reserve(KEY, 40.0, 100.0, "joules")
        dead._renewer.cancel()  # type: ignore[union-attr]  # the process is gone: nobody renews, nobody releases
        assert not await other.reserve(KEY, 0.04, 0.1), "both leases hold the budget while they are live"
        assert not await other.reserve(KEY, 40.0, 100.0, "joules"), "and both energy leases the energy budget"
        assert await other.reserve(KEY, 20.0, 100.0, "joules") and await other.reserved(KEY) == pytest.approx(0.08)
        await other.release(KEY, 20.0, "joules")  # dollars and joules are set aside apart: neither eats the other
        await asyncio.sleep(1.0)  # three TTLs: the dead leases expire, the live ones were renewed
        assert await other.reserved(KEY) == pytest.approx(0.04)
        assert await other.reserved(KEY, "joules") == pytest.approx(40.0)
        assert sorted(x.split(":")[0] for x in _leases(client)) == ["live", "live"]
        assert await other.reserve(KEY, 0.04, 0.1), "what the dead replica set aside is back in the budget"
        assert await other.reserve(KEY, 40.0, 100.0, "joules"), "its energy too"
        await live.release(KEY, 0.04)
        await live.release(KEY, 0.04)  # a second release of the same amount finds no lease: changes nothing
        await live.release(KEY, 40.0, "joules")
        await live.release(KEY, 40.0)  # the amount under the other unit: no such lease, nothing changes
        await other.release(KEY, 0.04)
        await other.release(KEY, 40.0, "joules")
        assert await other.reserved(KEY) == 0.0 and await other.reserved(KEY, "joules") == 0.0 and _leases(client) == []
        for s in (live, dead, other):
            await s.aclose()

    asyncio.run(run())


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    asks=st.lists(
        st.tuples(st.integers(0, 2), st.sampled_from([0.01, 0.02, 0.035, 0.07]), st.sampled_from(["usd", "joules"])),
        min_size=1,
        max_size=24,
    ),
    spent=st.sampled_from([0.0, 0.03, 0.09]),
)
def test_concurrent_reservations_from_three_replicas_never_exceed_the_limit(
    redis_url: str, asks: list[tuple[int, float, str]], spent: float
) -> None:
    """Whatever three replicas ask at once, in dollars and in joules (a thousand joules a dollar here, each unit
    against its own limit): what is granted plus what was spent stays within the limit, and once every grant is
    given back nothing stays set aside."""
    redis.Redis.from_url(redis_url).flushdb()
    scale = {"usd": 1.0, "joules": 1000.0}
    limit = 0.1

    def amount(a: float, unit: str) -> float:  # whole joules: each unit's sums are checked in that unit
        return a if unit == "usd" else float(round(a * scale[unit]))

    async def run() -> None:
        stores = [RedisStore(redis_url, reservation_ttl_s=5, replica_id=f"r{i}") for i in range(3)]
        if spent:
            await stores[0].record_usage(KEY, prompt_tokens=1, completion_tokens=1, cloud_cost_usd=spent, energy_joules=amount(spent, "joules"))
        granted = await asyncio.gather(*(stores[i].reserve(KEY, amount(a, u), amount(limit, u), u) for i, a, u in asks))  # type: ignore[arg-type]
        for unit in scale:
            used, cap = amount(spent, unit), amount(limit, unit)
            held = sum(amount(a, u) for (_, a, u), ok in zip(asks, granted, strict=True) if ok and u == unit)
            assert used + held <= cap + 1e-9
            assert await stores[0].reserved(KEY, unit) == pytest.approx(held)  # type: ignore[arg-type]
            refused = [amount(a, u) for (_, a, u), ok in zip(asks, granted, strict=True) if not ok and u == unit]
            assert all(used + held + a > cap for a in refused), "a refusal only when the ask did not fit"
        await asyncio.gather(*(stores[i].release(KEY, amount(a, u), u) for (i, a, u), ok in zip(asks, granted, strict=True) if ok))  # type: ignore[arg-type]
        assert await stores[1].reserved(KEY) == 0.0 and await stores[1].reserved(KEY, "joules") == 0.0
        for s in stores:
            await s.aclose()

    asyncio.run(run())


def test_a_reservation_is_given_back_where_it_was_made(redis_url: str) -> None:
    """One made in memory while Redis was away must not come off Redis's total once Redis is back (before, the
    release went wherever the next call went, and took another replica's reservation off the budget)."""
    from hybridgate.serving.state.memory import MemoryStore
    from hybridgate.serving.state.resilient import ResilientStore

    async def run() -> None:
        store = ResilientStore(RedisStore(redis_url, replica_id="a"), MemoryStore(), reconnect_interval_s=60)
        peer = RedisStore(redis_url, replica_id="b")
        assert await peer.reserve(KEY, 0.03, 0.1)
        store.degraded, store._retry_at = True, time.monotonic() + 60  # Redis away: reservations go to memory
        assert await store.reserve(KEY, 0.03, 0.1)
        store.degraded = False  # Redis back
        await store.release(KEY, 0.03)
        assert await peer.reserved(KEY) == pytest.approx(0.03), "the peer's reservation is still set aside"
        assert sum(store.fallback._reserved.values()) == 0.0, "and memory's is given back, not left to block the next outage"
        assert await store.reserve(KEY, 0.05, 0.1) and await peer.reserved(KEY) == pytest.approx(0.08)
        await store.account(KEY, prompt_tokens=1, completion_tokens=1, cloud_cost_usd=0.01, released_usd=0.05, decision={"id": "x"})
        assert await peer.reserved(KEY) == pytest.approx(0.03)
        await peer.release(KEY, 0.03)
        await store.aclose()
        await peer.aclose()

    asyncio.run(run())


def test_the_fleet_shares_each_nodes_load_and_speed(redis_url: str) -> None:
    """Two replicas in front of one edge node: each counts the other's requests in flight there, and the other's
    view leaves with the other (its entry expires)."""

    def stats() -> NodeStats:
        s = NodeStats()
        s.add("edge", tokens_per_s=10.0)
        return s

    async def run() -> None:
        a, b = stats(), stats()
        sa = NodeShare(a, RedisStore(redis_url, replica_id="a"), 0.1)
        sb = NodeShare(b, RedisStore(redis_url, replica_id="b"), 0.1)
        tickets = [b.begin("edge") for _ in range(3)]
        b.nodes["edge"].ms_per_token, b.nodes["edge"].speed_measured = 40.0, 3
        await sb.exchange()
        await sa.exchange()
        assert a.load("edge") == 3.0 and a.features("edge").ms_per_token == pytest.approx(40.0)
        a.begin("edge")
        assert a.load("edge") == 4.0, "its own request adds to the fleet's"
        await asyncio.sleep(0.4)  # b stops publishing: its view expires after three intervals
        await sa.exchange()
        assert a.load("edge") == 1.0 and sa.replicas_seen == 0 and a.features("edge").ms_per_token == pytest.approx(100.0)
        del tickets
        await sa.state.aclose()
        await sb.state.aclose()

    asyncio.run(run())


# -- three real replicas --------------------------------------------------------------------------
LIMIT_USD = 0.12  # per key and day: a cloud answer costs 0.015 and sets up to about 0.04 aside


@dataclass
class Replica:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Outcome:
    n: int
    replica: str
    kind: str
    key: str
    status: int | None = None  # None: the client saw a transport error (the replica died under it)
    request_id: str | None = None
    route: str | None = None
    cache: str | None = None
    error: str | None = None
    sent_after_kill: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _replica_config(tmp: Path, name: str, port: int, redis_url: str, cloud_base: str) -> Path:
    cfg = {
        "server": {"host": "127.0.0.1", "port": port, "api_keys": ["k1", "k2", "k3"], "log_level": "warning"},
        "local": {"n_ctx": 1024, "default_max_tokens": 8, "n_threads": 1, "max_queue": 8},
        "cloud": {
            "model": "openai/stub-large", "api_base": f"{cloud_base}/v1", "timeout_s": 10, "max_retries": 0,
            "cost_per_1k_prompt_usd": 1.0, "cost_per_1k_completion_usd": 1.0,
        },
        "standin": {"enabled": False},
        "state": {"redis_url": redis_url, "cache_enabled": True, "reservation_ttl_s": 2.0, "replica_id": name, "node_share_s": 0.5},
        "budgets": {"default_daily_usd": LIMIT_USD},
        "health": {"interval_s": 30},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def fleet(stub: tuple[str, StubBehaviour]) -> Iterator[tuple[list[Replica], RedisServer, StubBehaviour]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYBRIDGATE_") and k != "REDIS_URL"}
    env |= {"HF_HUB_OFFLINE": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    tmp = Path(tempfile.mkdtemp(prefix="hybridgate-replicas-"))
    with RedisServer() as server:
        replicas = []
        for i in range(3):
            name, port = f"r{i}", free_port()
            log = tmp / f"{name}.log"
            cmd = [sys.executable, "-m", "hybridgate.cli", "serve", "--config", str(_replica_config(tmp, name, port, server.url(), stub[0]))]
            with log.open("wb") as out:
                replicas.append(Replica(name, port, subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT), log))
        try:
            deadline = time.monotonic() + 120
            for r in replicas:
                while True:
                    assert r.proc.poll() is None, r.log.read_text()[-3000:]
                    try:
                        if httpx.get(f"{r.url}/readyz", headers={"Authorization": "Bearer k1"}, timeout=1).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    assert time.monotonic() < deadline, f"{r.name} not ready in 120 s: {r.log.read_text()[-3000:]}"
                    time.sleep(0.2)
            yield replicas, server, stub[1]
        finally:
            for r in replicas:  # everything worth checking is in Redis already: no graceful shutdown to wait for
                if r.proc.poll() is None:
                    r.proc.kill()
                    r.proc.wait(timeout=10)


MIX = [  # (kind, key, body); each a different question, so that only the deliberate repeats can hit the cache
    ("cloud", "k1", {"model": "hybridgate/cloud", "max_tokens": 5}),
    ("local", "k2", {"model": "hybridgate/local", "max_tokens": 2}),
    ("cloud-stream", "k2", {"model": "hybridgate/cloud", "max_tokens": 5, "stream": True}),
    ("auto", "k1", {"model": "hybridgate/auto", "max_tokens": 2}),
]


def _send(r: Replica, n: int, kind: str, key: str, body: dict[str, Any], question: str, after_kill: bool) -> Outcome:
    out = Outcome(n, r.name, kind, key, sent_after_kill=after_kill)
    payload = {**body, "messages": [{"role": "user", "content": question}]}
    try:
        if body.get("stream"):
            with httpx.stream("POST", f"{r.url}/v1/chat/completions", json=payload, headers={"Authorization": f"Bearer {key}"}, timeout=30) as resp:
                out.status, out.request_id = resp.status_code, resp.headers.get("x-hybridgate-request-id")
                out.route, out.cache = resp.headers.get("x-hybridgate-route"), resp.headers.get("x-hybridgate-cache")
                text = "".join(resp.iter_text())
                if resp.status_code != 200:
                    out.extra = json.loads(text)
                elif "data: [DONE]" not in text:
                    out.status, out.error = None, "stream cut short"
        else:
            resp = httpx.post(f"{r.url}/v1/chat/completions", json=payload, headers={"Authorization": f"Bearer {key}"}, timeout=30)
            out.status, out.request_id = resp.status_code, resp.headers.get("x-hybridgate-request-id")
            out.route, out.cache = resp.headers.get("x-hybridgate-route"), resp.headers.get("x-hybridgate-cache")
            if resp.status_code != 200:
                out.extra = resp.json()
    except httpx.TransportError as exc:
        out.status, out.error = None, f"{type(exc).__name__}: {exc}"
    return out


async def _reserved(url: str, key: str) -> float:
    store = RedisStore(url, replica_id="reconcile")
    try:
        return await store.reserved(key)
    finally:
        await store.aclose()


def test_three_replicas_one_killed_mid_run_reconcile_with_redis(fleet: tuple[list[Replica], RedisServer, StubBehaviour]) -> None:
    replicas, server, behaviour = fleet
    client = redis.Redis.from_url(server.url(), decode_responses=True)
    behaviour.delay_s = 0.6  # cloud calls stay in flight long enough for the kill to land inside some
    victim = replicas[2]
    live = list(replicas)
    outcomes: list[Outcome] = []
    killed = threading.Event()
    lock = threading.Lock()
    turn = 0

    def next_replica() -> Replica:
        nonlocal turn
        with lock:  # round-robin over the replicas the balancer still sees alive
            r = live[turn % len(live)]
            turn += 1
            return r

    held_at_kill: list[str] = []
    orphaned: list[str] = []

    def kill_when_a_lease_is_in_flight() -> None:
        deadline = time.monotonic() + 60
        while not held_at_kill:
            held_at_kill.extend(x for k in client.keys("hybridgate:leases:*") for x in client.zrange(k, 0, -1) if x.startswith(f"{victim.name}:"))
            assert held_at_kill or time.monotonic() < deadline, "the victim never held a lease"
            time.sleep(0.01)
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(timeout=10)
        orphaned.extend(set(held_at_kill) & set(_leases(redis.Redis.from_url(server.url()))))  # not given back: it died holding them
        with lock:
            live.remove(victim)
        killed.set()

    total = 32
    with ThreadPoolExecutor(max_workers=6) as pool:
        killer = pool.submit(kill_when_a_lease_is_in_flight)
        futures = []
        for n in range(total):
            kind, key, body = MIX[n % len(MIX)]
            question = f"question {n}: what is {n} plus {n}?"
            futures.append(pool.submit(lambda n=n, kind=kind, key=key, body=body, q=question: _send(next_replica(), n, kind, key, body, q, killed.is_set())))
        outcomes = [f.result() for f in futures]
        killer.result()
    # The same cloud question twice, through two replicas: the second is the first's answer, from the shared cache.
    first = _send(replicas[0], 100, "cloud", "k3", MIX[0][2], "a repeated question", True)
    again = _send(replicas[1], 101, "cloud", "k3", MIX[0][2], "a repeated question", True)
    outcomes += [first, again]
    assert first.status == 200 and first.cache == "miss" and again.status == 200 and again.cache == "hit", (first, again)

    # Every client saw either an answer, a documented refusal, or (on the killed replica only) an error.
    for o in outcomes:
        if o.status is None:
            assert o.replica == victim.name, o
        else:
            assert o.status in (200, 429), o
            if o.status == 429:
                assert o.extra["error"]["code"] == "budget_exhausted", o
    assert any(o.status is None for o in outcomes), "the kill must have cut at least one request short"
    print(
        f"\n{len(outcomes)} requests: {sum(o.status == 200 for o in outcomes)} answered, {sum(o.status == 429 for o in outcomes)} "
        f"refused for budget, {sum(o.status is None for o in outcomes)} lost on the killed replica"
    )

    time.sleep(2.5)  # beyond the reservation TTL: whatever the victim had set aside expires
    decisions = [json.loads(x) for x in client.lrange("hybridgate:decisions", 0, -1)]
    by_id: dict[str, list[dict[str, Any]]] = {}
    for d in decisions:
        by_id.setdefault(d["id"], []).append(d)
    answered = [o for o in outcomes if o.status == 200]
    for o in answered:
        assert len(by_id.get(o.request_id or "", [])) == 1, f"answered request accounted {len(by_id.get(o.request_id or '', []))} times: {o}"
        assert by_id[o.request_id or ""][0]["replica"] == o.replica
    unseen = [d for d in decisions if d["id"] not in {o.request_id for o in answered}]
    lost = [o for o in outcomes if o.status is None]
    # An answer accounted in the instant before the victim died, whose bytes never left: billed (the provider was
    # paid), logged, and only ever on the victim, at most one per request its clients lost.
    assert all(d["replica"] == victim.name for d in unseen) and len(unseen) <= len(lost), unseen

    for key in ("k1", "k2", "k3"):
        usage = client.hgetall(f"hybridgate:usage:{time.strftime('%Y-%m-%d', time.gmtime())}:{key_id(key)}")
        mine = [d for d in decisions if d["key"] == key_id(key)]
        assert int(usage["requests"]) == len(mine), "counters and decision log agree: each answer counted once"
        assert float(usage["cloud_cost_usd"]) == pytest.approx(sum(d["cost_usd"] for d in mine), abs=1e-6)
        assert float(usage["cloud_cost_usd"]) <= LIMIT_USD + 1e-9, "no budget exceeded"
        billed = [d for d in mine if d["cost_usd"] > 0]
        assert all(d["route"] in ("cloud", "collab") and not d.get("cache") for d in billed), "only cloud calls are billed"
        assert asyncio.run(_reserved(server.url(), key_id(key))) == 0.0, "the dead replica's reservations were released by expiry"
    assert orphaned, "the victim died holding a reservation"
    assert not set(orphaned) & set(_leases(redis.Redis.from_url(server.url()))), "its reservations expired"
    # Cloud calls the stub saw: every billed answer is one; the victim's cut-short calls may be more, never fewer.
    cloud_answers = [d for d in decisions if d["route"] == "cloud" and not d.get("cache")]
    assert len(behaviour.received) >= len(cloud_answers)

    # Rate an answer through a replica other than the one that gave it; a second rating, anywhere, finds nothing.
    rated = next(o for o in answered if o.kind == "auto" and o.replica != victim.name)
    other = next(r for r in replicas if r.name not in (rated.replica, victim.name))
    auth = {"Authorization": f"Bearer {rated.key}"}
    r1 = httpx.post(f"{other.url}/v1/feedback", json={"id": rated.request_id, "rating": "bad"}, headers=auth, timeout=10)
    assert r1.status_code == 200 and r1.json()["stored"] is True, r1.text
    back = next(r for r in replicas if r.name == rated.replica)
    assert httpx.post(f"{back.url}/v1/feedback", json={"id": rated.request_id, "rating": "good"}, headers=auth, timeout=10).status_code == 404
    labels = [json.loads(x) for x in client.lrange("hybridgate:labels", 0, -1)]
    assert [x["source"] for x in labels] == ["feedback"]
