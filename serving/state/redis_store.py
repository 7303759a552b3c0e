"""State in Redis, shared by every gateway process that points at the same server."""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis

from hybridgate.serving.state.base import UsageTotals, today

_PREFIX = "hybridgate:"
_USAGE_TTL_S = 3 * 24 * 3600


# Check and set aside in one step on the server: spent + reserved + wanted must stay within the limit.
_RESERVE = """
local spent = tonumber(redis.call('HGET', KEYS[1], 'cloud_cost_usd') or '0')
local held = tonumber(redis.call('HGET', KEYS[1], 'reserved_usd') or '0')
if spent + held + tonumber(ARGV[1]) > tonumber(ARGV[2]) + 1e-12 then return 0 end
redis.call('HINCRBYFLOAT', KEYS[1], 'reserved_usd', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""


class RedisStore:
    kind = "redis"

    def __init__(self, url: str, decision_log_size: int = 10_000, timeout_s: float = 0.5, label_store_size: int = 10_000) -> None:
        self.url = url
        self._size = decision_log_size
        self._label_size = label_store_size
        self._r = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, decode_responses=True
        )

    def _usage_key(self, key: str) -> str:
        return f"{_PREFIX}usage:{today()}:{key}"

    async def record_usage(
        self, key: str, *, prompt_tokens: int, completion_tokens: int, cloud_cost_usd: float, energy_joules: float = 0.0
    ) -> None:
        k = self._usage_key(key)
        async with self._r.pipeline(transaction=True) as p:
            p.hincrby(k, "requests", 1)
            p.hincrby(k, "prompt_tokens", prompt_tokens)
            p.hincrby(k, "completion_tokens", completion_tokens)
            p.hincrbyfloat(k, "cloud_cost_usd", cloud_cost_usd)
            p.hincrbyfloat(k, "energy_joules", energy_joules)
            p.expire(k, _USAGE_TTL_S)
            await p.execute()

    async def reserve(self, key: str, usd: float, limit: float) -> bool:
        ok = await self._r.eval(_RESERVE, 1, self._usage_key(key), repr(float(usd)), repr(float(limit)), _USAGE_TTL_S)
        return bool(int(ok))

    async def release(self, key: str, usd: float) -> None:
        await self._r.hincrbyfloat(self._usage_key(key), "reserved_usd", -float(usd))

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
            p.lpush(f"{_PREFIX}decisions", json.dumps(record, separators=(",", ":")))
            p.ltrim(f"{_PREFIX}decisions", 0, self._size - 1)
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

    async def add_label(self, record: dict[str, Any]) -> None:
        async with self._r.pipeline(transaction=True) as p:
            p.lpush(f"{_PREFIX}labels", json.dumps(record, separators=(",", ":")))
            p.ltrim(f"{_PREFIX}labels", 0, self._label_size - 1)
            await p.execute()

    async def labels(self, limit: int) -> list[dict[str, Any]]:
        return [json.loads(r) for r in await self._r.lrange(f"{_PREFIX}labels", 0, limit - 1)]

    async def ping(self) -> None:
        await self._r.ping()

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "url": _redact(self.url)}

    async def aclose(self) -> None:
        await self._r.aclose()


def _redact(url: str) -> str:
    if "@" in url:
        scheme, rest = url.split("://", 1) if "://" in url else ("", url)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
