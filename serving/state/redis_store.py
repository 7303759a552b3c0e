"""State in Redis, shared by every gateway process that points at the same server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from hybridgate.serving.state.base import SPENT_FIELD, Unit, UsageTotals, today

log = logging.getLogger(__name__)

_PREFIX = "hybridgate:"
_USAGE_TTL_S = 3 * 24 * 3600


# A reservation is a lease: its amount under its id in one hash, its expiry (the server's clock, ms) in a sorted set.
# Every script first drops the leases whose expiry has passed (a replica that died stopped renewing them), then
# writes the live total into the usage hash's ``reserved_usd`` (``reserved_joules`` for energy), so the budget check
# and what operators read agree. A unit's leases live under their own keys: dollars and joules never mix.
_REAP = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do
  redis.call('HDEL', KEYS[3], id)
  redis.call('ZREM', KEYS[2], id)
end
local held = 0
for _, v in ipairs(redis.call('HVALS', KEYS[3])) do held = held + tonumber(v) end
"""

# Check and set aside in one step on the server: spent + reserved + wanted must stay within the limit.
# ARGV: amount, limit, ttl ms, lease id, usage ttl s, the usage field spent is read from, the one reserved goes to.
_RESERVE = _REAP + """
if tonumber(redis.call('HGET', KEYS[1], ARGV[6]) or '0') + held + tonumber(ARGV[1]) > tonumber(ARGV[2]) + 1e-12 then
  if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], ARGV[7], held) end
  return 0
end
redis.call('HSET', KEYS[3], ARGV[4], ARGV[1])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[4])
redis.call('HSET', KEYS[1], ARGV[7], held + tonumber(ARGV[1]))
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[5]) end
return 1
"""

# Give one lease back (a second release of the same lease, or one that already expired, changes nothing).
# ARGV: the lease id, the usage field the live total goes to.
_RELEASE = _REAP + """
if redis.call('HDEL', KEYS[3], ARGV[1]) == 1 then
  redis.call('ZREM', KEYS[2], ARGV[1])
  held = 0
  for _, v in ipairs(redis.call('HVALS', KEYS[3])) do held = held + tonumber(v) end
end
if held == 0 and redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[2], held)
return 1
"""

# Push each named lease's expiry forward if it is still live (KEYS: its sorted set; ARGV: ttl ms, then the ids).
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local renewed = 0
for i, zset in ipairs(KEYS) do
  local id = ARGV[i + 1]
  local expiry = redis.call('ZSCORE', zset, id)
  if expiry and tonumber(expiry) > now then
    redis.call('ZADD', zset, 'XX', now + tonumber(ARGV[1]), id)
    renewed = renewed + 1
  end
end
return renewed
"""

# A rating in the ratings hash, its id at the head of a list; the oldest beyond the decision log's size leave both
# (KEYS: hash, list; ARGV: id, rating, size). One script, so the hash never holds a rating the list forgot.
_RATE = """
if redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) == 1 then redis.call('LPUSH', KEYS[2], ARGV[1]) end
local over = redis.call('LLEN', KEYS[2]) - tonumber(ARGV[3])
for _ = 1, over do redis.call('HDEL', KEYS[1], redis.call('RPOP', KEYS[2])) end
return over
"""


@dataclass(frozen=True)
class Lease:
    """One reservation this process holds: where it lives in Redis (the day it was made) and what it set aside."""

    id: str
    keys: tuple[str, str, str]  # usage hash, lease expiries, lease amounts
    amount: float
    unit: Unit = "usd"


def default_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class RedisStore:
    """Everything a fleet of gateways must agree on, in one Redis.

    Reservations are leases: each lives under its own id with an expiry on the
    server's clock, and this store renews the ones it holds every third of
    ``reservation_ttl_s`` while their calls are in flight. A replica that dies
    stops renewing, and the next reservation or release for that key drops
    what it had set aside: a crash cannot keep budget locked for the day.
    """

    kind = "redis"

    def __init__(
        self,
        url: str,
        decision_log_size: int = 10_000,
        timeout_s: float = 0.5,
        label_store_size: int = 10_000,
        *,
        reservation_ttl_s: float = 30.0,
        replica_id: str | None = None,
    ) -> None:
        self.url = url
        self._size = decision_log_size
        self._label_size = label_store_size
        self.reservation_ttl_s = reservation_ttl_s
        self.replica = replica_id or default_replica_id()
        self._r = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, decode_responses=True
        )
        self._leases: dict[tuple[str, str, float], list[Lease]] = {}  # (key, unit, amount) -> this process's live leases
        self._renewer: asyncio.Task[None] | None = None

    def _usage_key(self, key: str) -> str:
        return f"{_PREFIX}usage:{today()}:{key}"

    def _lease_keys(self, key: str, unit: Unit = "usd") -> tuple[str, str, str]:
        day, sub = today(), "" if unit == "usd" else f"{unit}:"  # the dollar leases keep the names they always had
        return self._usage_key(key), f"{_PREFIX}leases:{sub}{day}:{key}", f"{_PREFIX}lease_{unit}:{day}:{key}"

    def _queue_usage(
        self, p: Any, key: str, prompt_tokens: int, completion_tokens: int, cloud_cost_usd: float, energy_joules: float
    ) -> None:
        k = self._usage_key(key)
        p.hincrby(k, "requests", 1)
        p.hincrby(k, "prompt_tokens", prompt_tokens)
        p.hincrby(k, "completion_tokens", completion_tokens)
        p.hincrbyfloat(k, "cloud_cost_usd", cloud_cost_usd)
        p.hincrbyfloat(k, "energy_joules", energy_joules)
        p.expire(k, _USAGE_TTL_S)

    def _queue_decision(self, p: Any, record: dict[str, Any]) -> None:
        p.lpush(f"{_PREFIX}decisions", json.dumps({**record, "replica": self.replica}, separators=(",", ":")))
        p.ltrim(f"{_PREFIX}decisions", 0, self._size - 1)

    async def record_usage(
        self, key: str, *, prompt_tokens: int, completion_tokens: int, cloud_cost_usd: float, energy_joules: float = 0.0
    ) -> None:
        async with self._r.pipeline(transaction=True) as p:
            self._queue_usage(p, key, prompt_tokens, completion_tokens, cloud_cost_usd, energy_joules)
            await p.execute()

    async def account(
        self,
        key: str,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        cloud_cost_usd: float,
        energy_joules: float = 0.0,
        released_usd: float = 0.0,
        decision: dict[str, Any],
    ) -> None:
        """Counted, given back and logged in one MULTI: a replica killed on the way leaves all of it or none (and
        then its lease expires), so the decision log and the counters always add up to the same spend."""
        lease = self._take_lease(key, released_usd) if released_usd else None
        async with self._r.pipeline(transaction=True) as p:
            self._queue_usage(p, key, prompt_tokens, completion_tokens, cloud_cost_usd, energy_joules)
            if lease is not None:
                p.eval(_RELEASE, 3, *lease.keys, lease.id, "reserved_usd")
            self._queue_decision(p, record=decision)
            await p.execute()

    # -- reservations -------------------------------------------------------------------------------
    async def reserve(self, key: str, amount: float, limit: float, unit: Unit = "usd") -> bool:
        lease = Lease(f"{self.replica}:{uuid.uuid4().hex[:16]}", self._lease_keys(key, unit), float(amount), unit)
        ttl_ms = max(1, int(self.reservation_ttl_s * 1000))
        ok = await self._r.eval(
            _RESERVE, 3, *lease.keys, repr(lease.amount), repr(float(limit)), ttl_ms, lease.id, _USAGE_TTL_S,
            SPENT_FIELD[unit], f"reserved_{unit}",
        )
        if not int(ok):
            return False
        self._leases.setdefault((key, unit, float(amount)), []).append(lease)
        self._start_renewing()
        return True

    def holds(self, key: str, amount: float, unit: Unit = "usd") -> bool:
        """Whether this store set ``amount`` of ``unit`` aside for ``key`` and has not given it back (no network)."""
        return bool(self._leases.get((key, unit, float(amount))))

    def _take_lease(self, key: str, amount: float, unit: Unit = "usd") -> Lease | None:
        """Leases of one key, unit and amount are interchangeable: giving back any one restores the same budget."""
        slot = (key, unit, float(amount))
        leases = self._leases.get(slot)
        if not leases:
            return None
        lease = leases.pop()
        if not leases:
            del self._leases[slot]
        return lease

    async def release(self, key: str, amount: float, unit: Unit = "usd") -> None:
        lease = self._take_lease(key, amount, unit)  # no longer renewed from here on: if the call below fails, it expires
        if lease is not None:
            await self._r.eval(_RELEASE, 3, *lease.keys, lease.id, f"reserved_{unit}")

    async def reserved(self, key: str, unit: Unit = "usd") -> float:
        """What is set aside for ``key`` today by live leases, after dropping the expired ones."""
        keys = self._lease_keys(key, unit)
        await self._r.eval(_RELEASE, 3, *keys, "", f"reserved_{unit}")
        return float(await self._r.hget(keys[0], f"reserved_{unit}") or 0.0)

    def _start_renewing(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew_forever())

    async def _renew_forever(self) -> None:
        """Every third of the TTL, while this process holds leases: two renewals can fail before one expires."""
        while self._leases:
            await asyncio.sleep(self.reservation_ttl_s / 3)
            await self.renew()

    async def renew(self) -> int:
        """Push every held lease's expiry forward; the number still live. One that had expired anyway (this process
        stalled longer than the TTL) is not brought back: its call goes on, and its real cost is still recorded."""
        held = [lease for leases in list(self._leases.values()) for lease in leases]
        if not held:
            return 0
        try:
            ttl_ms = max(1, int(self.reservation_ttl_s * 1000))
            return int(await self._r.eval(_RENEW, len(held), *(x.keys[1] for x in held), ttl_ms, *(x.id for x in held)))
        except Exception as exc:  # noqa: BLE001 - Redis away: the next round tries again, expiry bounds the harm
            log.warning("could not renew %d budget reservations: %s", len(held), exc)
            return 0

    async def usage_today(self, key: str) -> UsageTotals:
        h = await self._r.hgetall(self._usage_key(key))
        return UsageTotals(
            int(h.get("requests", 0)),
            int(h.get("prompt_tokens", 0)),
            int(h.get("completion_tokens", 0)),
            float(h.get("cloud_cost_usd", 0.0)),
            float(h.get("energy_joules", 0.0)),
        )

    async def log_decision(self, record: dict[str, Any]) -> None:
        async with self._r.pipeline(transaction=True) as p:
            self._queue_decision(p, record)
            await p.execute()

    async def recent_decisions(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = await self._r.lrange(f"{_PREFIX}decisions", 0, limit - 1)
        return [json.loads(r) for r in rows]

    async def cache_get(self, key: str) -> dict[str, Any] | None:
        raw = await self._r.get(f"{_PREFIX}cache:{key}")
        return None if raw is None else json.loads(raw)

    async def cache_set(self, key: str, value: dict[str, Any], ttl_s: int) -> None:
        await self._r.set(f"{_PREFIX}cache:{key}", json.dumps(value, separators=(",", ":")), ex=ttl_s)

    async def hold(self, request_id: str, record: dict[str, Any], ttl_s: int) -> None:
        # The owner is part of the name: another key's GETDEL can only miss, never take the record.
        await self._r.set(f"{_PREFIX}held:{record.get('key')}:{request_id}", json.dumps(record, separators=(",", ":")), ex=ttl_s)

    async def take_held(self, request_id: str, owner: str) -> dict[str, Any] | None:
        raw = await self._r.getdel(f"{_PREFIX}held:{owner}:{request_id}")  # one rating per answer
        return None if raw is None else json.loads(raw)

    async def rate(self, request_id: str, rating: float) -> None:
        await self._r.eval(_RATE, 2, f"{_PREFIX}ratings", f"{_PREFIX}rated", request_id, repr(float(rating)), self._size)

    async def ratings(self, request_ids: list[str]) -> dict[str, float]:
        if not request_ids:
            return {}
        found = await self._r.hmget(f"{_PREFIX}ratings", request_ids)  # one round trip for the whole page
        return {i: float(v) for i, v in zip(request_ids, found, strict=True) if v is not None}

    async def add_label(self, record: dict[str, Any]) -> None:
        async with self._r.pipeline(transaction=True) as p:
            p.lpush(f"{_PREFIX}labels", json.dumps(record, separators=(",", ":")))
            p.ltrim(f"{_PREFIX}labels", 0, self._label_size - 1)
            await p.execute()

    async def labels(self, limit: int) -> list[dict[str, Any]]:
        return [json.loads(r) for r in await self._r.lrange(f"{_PREFIX}labels", 0, limit - 1)]

    async def publish_nodes(self, replica: str, view: dict[str, Any], ttl_s: float) -> None:
        """This replica's view of the nodes (``node_share.py``), gone ``ttl_s`` after its last write."""
        async with self._r.pipeline(transaction=True) as p:
            p.set(f"{_PREFIX}nodes:{replica}", json.dumps(view, separators=(",", ":")), px=max(1, int(ttl_s * 1000)))
            p.sadd(f"{_PREFIX}replicas", replica)
            await p.execute()

    async def fleet_nodes(self) -> dict[str, dict[str, Any]]:
        """Every live replica's view of the nodes, by replica; replicas whose view expired are forgotten."""
        names = sorted(await self._r.smembers(f"{_PREFIX}replicas"))
        if not names:
            return {}
        views = await self._r.mget([f"{_PREFIX}nodes:{n}" for n in names])
        gone = [n for n, v in zip(names, views, strict=True) if v is None]
        if gone:
            await self._r.srem(f"{_PREFIX}replicas", *gone)
        return {n: json.loads(v) for n, v in zip(names, views, strict=True) if v is not None}

    async def ping(self) -> None:
        await self._r.ping()

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "url": _redact(self.url), "replica": self.replica, "leases": sum(map(len, self._leases.values()))}

    async def aclose(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._renewer
        await self._r.aclose()


def _redact(url: str) -> str:
    if "@" in url:
        scheme, rest = url.split("://", 1) if "://" in url else ("", url)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
