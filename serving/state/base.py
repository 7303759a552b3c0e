"""The one interface both stores implement."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Unit = Literal["usd", "joules"]
# What each unit of a reservation is checked against in today's counters (UsageTotals and the Redis usage hash).
SPENT_FIELD: dict[str, str] = {"usd": "cloud_cost_usd", "joules": "energy_joules"}


@dataclass(frozen=True)
class UsageTotals:
    """One API key's counters for one UTC day."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cloud_cost_usd: float = 0.0
    energy_joules: float = 0.0  # local and cloud sides together, as each answer reported them


def today() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")


def key_id(api_key: str | None) -> str:
    """Counters are kept under a digest of the key, so a state dump never shows a secret."""
    if not api_key:
        return "anonymous"
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()[:16]


class StateStore(Protocol):
    kind: str

    async def record_usage(
        self, key: str, *, prompt_tokens: int, completion_tokens: int, cloud_cost_usd: float, energy_joules: float = 0.0
    ) -> None: ...

    async def usage_today(self, key: str) -> UsageTotals: ...

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
        """One answer's bookkeeping as one step: its usage counted, ``released_usd`` (what :meth:`reserve` set
        aside for it) given back, its decision logged. Shared state must never hold one without the others,
        or a replica killed half-way would leave counters and decision log disagreeing."""
        ...

    async def reserve(self, key: str, amount: float, limit: float, unit: Unit = "usd") -> bool:
        """Set ``amount`` of ``unit`` (dollars of cloud spend, or joules of energy) aside for a call if
        today's use of that unit, what is already set aside and the amount stay within ``limit``; one atomic step,
        so concurrent calls cannot together overspend. False: nothing set aside."""
        ...

    async def release(self, key: str, amount: float, unit: Unit = "usd") -> None:
        """Give back what :meth:`reserve` set aside, once the call's real cost is recorded (or it failed)."""
        ...

    async def log_decision(self, record: dict[str, Any]) -> None: ...

    async def recent_decisions(self, limit: int = 100) -> list[dict[str, Any]]: ...

    async def cache_get(self, key: str) -> dict[str, Any] | None: ...

    async def cache_set(self, key: str, value: dict[str, Any], ttl_s: int) -> None: ...

    async def hold(self, request_id: str, record: dict[str, Any], ttl_s: int) -> None:
        """Keep what a later rating of this answer needs (its query vector, route, key), for ``ttl_s``."""
        ...

    async def take_held(self, request_id: str, owner: str) -> dict[str, Any] | None:
        """The held record of ``request_id`` if ``owner`` (a key id) made it, removed; otherwise None and untouched,
        so another key can neither read a record nor spend its owner's one rating."""
        ...

    async def rate(self, request_id: str, rating: float) -> None:
        """The user's rating (0 bad .. 1 good) of the answer ``request_id``, kept beside the decision log and as
        bounded as it (the newest ``decision_log_size`` ratings), so the dashboard can show it on the decision's row.
        Only called once :meth:`take_held` accepted the rating: one per answer, by the key that asked."""
        ...

    async def ratings(self, request_ids: list[str]) -> dict[str, float]:
        """The ratings of those of ``request_ids`` that have one (one read for them all); unrated ones are absent."""
        ...

    async def add_label(self, record: dict[str, Any]) -> None:
        """A labelled query vector (no text) for federated training; the store keeps the newest ones."""
        ...

    async def labels(self, limit: int) -> list[dict[str, Any]]: ...

    async def ping(self) -> None: ...

    def describe(self) -> dict[str, Any]: ...

    async def aclose(self) -> None: ...
