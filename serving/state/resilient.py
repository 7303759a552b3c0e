"""Redis when it answers, the process's own memory when it does not.

A gateway on a laptop must keep answering when the shared Redis goes away:
every call that fails on Redis is served by an in-process store instead, the
store reports itself degraded (``/readyz`` shows it), and after
``reconnect_interval_s`` the next call tries Redis again. Counters written while
degraded stay in memory; they are not replayed into Redis.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from hybridgate.serving.state.base import SPENT_FIELD, Unit, UsageTotals
from hybridgate.serving.state.memory import MemoryStore
from hybridgate.serving.state.redis_store import RedisStore

log = logging.getLogger(__name__)
T = TypeVar("T")
_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)


class ResilientStore:
    kind = "redis"

    def __init__(self, primary: RedisStore, fallback: MemoryStore, reconnect_interval_s: float = 2.0) -> None:
        self.primary = primary
        self.fallback = fallback
        self.reconnect_interval_s = reconnect_interval_s
        self.degraded = False
        self.last_error: str | None = None
        self._retry_at = 0.0
        self._last_seen: dict[str, UsageTotals] = {}  # today's counters as Redis last reported them, per key

    async def _call(self, op: Callable[[Any], Awaitable[T]]) -> T:
        if self.degraded and time.monotonic() < self._retry_at:
            return await op(self.fallback)
        try:
            result = await op(self.primary)
        except _DOWN as exc:
            self._went_down(exc)
            return await op(self.fallback)
        self._came_back()
        return result

    def _went_down(self, exc: BaseException) -> None:
        if not self.degraded:
            log.warning("redis unreachable (%s); state continues in process memory", exc)
        self.degraded = True
        self.last_error = f"{type(exc).__name__}: {exc}"
        self._retry_at = time.monotonic() + self.reconnect_interval_s

    def _came_back(self) -> None:
        if self.degraded:
            log.info("redis is back; state returns to redis")
            self.degraded = False
            self.last_error = None

    async def record_usage(
        self, key: str, *, prompt_tokens: int, completion_tokens: int, cloud_cost_usd: float, energy_joules: float = 0.0
    ) -> None:
        await self._call(
            lambda s: s.record_usage(
                key,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                cloud_cost_usd=cloud_cost_usd,
                energy_joules=energy_joules,
            )
        )

    async def usage_today(self, key: str) -> UsageTotals:
        seen = await self._call(lambda s: s.usage_today(key))
        if not self.degraded:
            self._last_seen[key] = seen
            return seen
        return self._with_last_seen(key, seen)

    def _with_last_seen(self, key: str, local: UsageTotals) -> UsageTotals:
        """While Redis is away, today's spend is what Redis last said plus what was spent since in memory: a
        budget must not start again from zero because the shared store went down."""
        last = self._last_seen.get(key, UsageTotals())
        return UsageTotals(
            last.requests + local.requests,
            last.prompt_tokens + local.prompt_tokens,
            last.completion_tokens + local.completion_tokens,
            last.cloud_cost_usd + local.cloud_cost_usd,
            last.energy_joules + local.energy_joules,
        )

    async def reserve(self, key: str, amount: float, limit: float, unit: Unit = "usd") -> bool:
        if not self.degraded or time.monotonic() >= self._retry_at:
            try:
                ok = await self.primary.reserve(key, amount, limit, unit)
            except _DOWN as exc:
                self._went_down(exc)  # a script that ran before the connection dropped leaves a lease that expires
            else:
                self._came_back()
                return ok
        # In memory, against what Redis last said was spent (plus what memory has seen since); asked once only.
        already = getattr(self._last_seen.get(key, UsageTotals()), SPENT_FIELD[unit])
        return await self.fallback.reserve(key, amount, max(0.0, limit - already), unit)

    async def release(self, key: str, amount: float, unit: Unit = "usd") -> None:
        """Given back where it was set aside: a reservation made in memory while Redis was away must not come off
        Redis's total once it is back (nor one made in Redis off memory's)."""
        if self.primary.holds(key, amount, unit):
            await self._call(lambda s: s.release(key, amount, unit) if s is self.primary else self._drop_lease(key, amount, unit))
        else:
            await self.fallback.release(key, amount, unit)

    async def _drop_lease(self, key: str, amount: float, unit: Unit = "usd") -> None:
        """Redis is away: stop renewing the lease, and Redis drops it when it expires."""
        self.primary._take_lease(key, amount, unit)

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
        in_redis = bool(released_usd) and self.primary.holds(key, released_usd)
        if released_usd and not in_redis:
            await self.fallback.release(key, released_usd)

        async def step(s: Any) -> None:
            if s is self.fallback and in_redis:
                await self._drop_lease(key, released_usd)
            await s.account(
                key,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                cloud_cost_usd=cloud_cost_usd,
                energy_joules=energy_joules,
                released_usd=released_usd if s is self.primary and in_redis else 0.0,
                decision=decision,
            )

        await self._call(step)

    async def log_decision(self, record: dict[str, Any]) -> None:
        await self._call(lambda s: s.log_decision(record))

    async def recent_decisions(self, limit: int = 100) -> list[dict[str, Any]]:
        return await self._call(lambda s: s.recent_decisions(limit))

    async def cache_get(self, key: str) -> dict[str, Any] | None:
        return await self._call(lambda s: s.cache_get(key))

    async def cache_set(self, key: str, value: dict[str, Any], ttl_s: int) -> None:
        await self._call(lambda s: s.cache_set(key, value, ttl_s))

    async def hold(self, request_id: str, record: dict[str, Any], ttl_s: int) -> None:
        await self._call(lambda s: s.hold(request_id, record, ttl_s))

    async def take_held(self, request_id: str, owner: str) -> dict[str, Any] | None:
        return await self._call(lambda s: s.take_held(request_id, owner))

    async def rate(self, request_id: str, rating: float) -> None:
        await self._call(lambda s: s.rate(request_id, rating))

    async def ratings(self, request_ids: list[str]) -> dict[str, float]:
        return await self._call(lambda s: s.ratings(request_ids))

    async def add_label(self, record: dict[str, Any]) -> None:
        await self._call(lambda s: s.add_label(record))

    async def labels(self, limit: int) -> list[dict[str, Any]]:
        return await self._call(lambda s: s.labels(limit))

    @property
    def replica(self) -> str:
        return self.primary.replica

    async def publish_nodes(self, replica: str, view: dict[str, Any], ttl_s: float) -> None:
        await self._call(lambda s: s.publish_nodes(replica, view, ttl_s))

    async def fleet_nodes(self) -> dict[str, dict[str, Any]]:
        return await self._call(lambda s: s.fleet_nodes())

    async def ping(self) -> None:
        await self._call(lambda s: s.ping())

    def describe(self) -> dict[str, Any]:
        return {**self.primary.describe(), "degraded": self.degraded, "last_error": self.last_error}

    async def aclose(self) -> None:
        await self.primary.aclose()
