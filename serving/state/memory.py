"""State in the gateway's own memory: nothing to install, gone on restart."""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from typing import Any

from hybridgate.serving.state.base import SPENT_FIELD, Unit, UsageTotals, today


class MemoryStore:
    kind = "memory"

    def __init__(self, decision_log_size: int = 10_000, cache_entries: int = 1024, label_store_size: int = 10_000) -> None:
        self._usage: dict[tuple[str, str], UsageTotals] = {}
        self._reserved: dict[tuple[str, str, str], float] = {}  # (day, key, unit) -> set aside
        self._decisions: deque[dict[str, Any]] = deque(maxlen=decision_log_size)
        self._cache: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self._cache_entries = cache_entries
        self._held: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self._labels: deque[dict[str, Any]] = deque(maxlen=label_store_size)
        self._held_entries = label_store_size
        self._ratings: OrderedDict[str, float] = OrderedDict()
        self._ratings_size = decision_log_size
        self._nodes: dict[str, tuple[float, dict[str, Any]]] = {}  # while Redis is away: this replica's own view

    async def record_usage(
        self, key: str, *, prompt_tokens: int, completion_tokens: int, cloud_cost_usd: float, energy_joules: float = 0.0
    ) -> None:
        slot = (today(), key)
        u = self._usage.get(slot, UsageTotals())
        self._usage[slot] = UsageTotals(
            u.requests + 1,
            u.prompt_tokens + prompt_tokens,
            u.completion_tokens + completion_tokens,
            u.cloud_cost_usd + cloud_cost_usd,
            u.energy_joules + energy_joules,
        )

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
        # No await inside the three: nothing can run between them on the event loop.
        await self.record_usage(
            key, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, cloud_cost_usd=cloud_cost_usd, energy_joules=energy_joules
        )
        if released_usd:
            await self.release(key, released_usd)
        await self.log_decision(decision)

    async def usage_today(self, key: str) -> UsageTotals:
        return self._usage.get((today(), key), UsageTotals())

    async def reserve(self, key: str, amount: float, limit: float, unit: Unit = "usd") -> bool:
        day = today()  # no await between the check and the write: atomic on the event loop
        slot, held = (day, key, unit), self._reserved.get((day, key, unit), 0.0)
        spent = getattr(self._usage.get((day, key), UsageTotals()), SPENT_FIELD[unit])
        if spent + held + amount > limit + 1e-12:
            return False
        self._reserved[slot] = held + amount
        return True

    async def release(self, key: str, amount: float, unit: Unit = "usd") -> None:
        slot = (today(), key, unit)
        self._reserved[slot] = max(0.0, self._reserved.get(slot, 0.0) - amount)

    async def log_decision(self, record: dict[str, Any]) -> None:
        self._decisions.append(record)

    async def recent_decisions(self, limit: int = 100) -> list[dict[str, Any]]:
        return list(self._decisions)[-limit:][::-1]

    async def cache_get(self, key: str) -> dict[str, Any] | None:
        hit = self._cache.get(key)
        if hit is None:
            return None
        expires, value = hit
        if time.monotonic() >= expires:
            del self._cache[key]
            return None
        self._cache.move_to_end(key)
        return value

    async def cache_set(self, key: str, value: dict[str, Any], ttl_s: int) -> None:
        self._cache[key] = (time.monotonic() + ttl_s, value)
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_entries:
            self._cache.popitem(last=False)

    async def hold(self, request_id: str, record: dict[str, Any], ttl_s: int) -> None:
        self._held[request_id] = (time.monotonic() + ttl_s, record)
        while len(self._held) > self._held_entries:
            self._held.popitem(last=False)

    async def take_held(self, request_id: str, owner: str) -> dict[str, Any] | None:
        hit = self._held.get(request_id)
        if hit is None or hit[1].get("key") != owner:
            return None
        del self._held[request_id]
        return None if time.monotonic() >= hit[0] else hit[1]

    async def rate(self, request_id: str, rating: float) -> None:
        self._ratings[request_id] = float(rating)
        self._ratings.move_to_end(request_id)
        while len(self._ratings) > self._ratings_size:
            self._ratings.popitem(last=False)

    async def ratings(self, request_ids: list[str]) -> dict[str, float]:
        return {i: self._ratings[i] for i in request_ids if i in self._ratings}

    async def add_label(self, record: dict[str, Any]) -> None:
        self._labels.append(record)

    async def labels(self, limit: int) -> list[dict[str, Any]]:
        return list(self._labels)[-limit:][::-1]

    async def publish_nodes(self, replica: str, view: dict[str, Any], ttl_s: float) -> None:
        self._nodes[replica] = (time.monotonic() + ttl_s, view)

    async def fleet_nodes(self) -> dict[str, dict[str, Any]]:
        now = time.monotonic()
        return {r: view for r, (expires, view) in self._nodes.items() if expires > now}

    async def ping(self) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "decisions": len(self._decisions), "cache_entries": len(self._cache), "labels": len(self._labels)}

    async def aclose(self) -> None:
        return None
