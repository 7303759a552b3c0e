"""The dashboard's history: the gateway's Prometheus counters, sampled in the background into time buckets.

Nothing here runs on the request path. The request path already counts (serving/metrics.py); a task reads
those counters every ``sample_s``, takes the difference from its last reading, and adds it to two bounded
rings of buckets: 10-second buckets for the last hour and 5-minute buckets for the last day. With Redis
configured each bucket is a hash that every replica adds into (HINCRBYFLOAT) and that expires with its ring,
so the history survives a restart and covers the fleet behind one Redis; otherwise it lives in memory.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from hybridgate.serving.metrics import Metrics
from hybridgate.serving.periodic import Periodic

log = logging.getLogger(__name__)

Counts = dict[str, float]


@dataclass(frozen=True)
class Resolution:
    """One ring: ``slots`` buckets of ``bucket_s`` seconds each."""

    name: str
    bucket_s: int
    slots: int

    @property
    def span_s(self) -> int:
        return self.bucket_s * self.slots

    def start_of(self, t: float) -> int:
        return int(t // self.bucket_s) * self.bucket_s


HOUR = Resolution("hour", 10, 360)
DAY = Resolution("day", 300, 288)
RESOLUTIONS = {r.name: r for r in (HOUR, DAY)}

# Which counters are sampled, and the short field name each sample gets in a bucket. Only counters and histogram
# buckets: they only grow, so a difference between two readings is exactly what happened in between.
_FIELDS = {
    "hybridgate_requests_total": ("req", ("route", "backend", "status")),
    "hybridgate_tokens_total": ("tok", ("backend", "kind")),
    "hybridgate_cloud_spend_usd_total": ("usd", ("backend",)),
    "hybridgate_fallbacks_total": ("fb", ("from_backend", "to_backend")),
    "hybridgate_rejections_total": ("rej", ("reason",)),
    "hybridgate_energy_joules_total": ("j", ("route", "side", "method")),
    "hybridgate_cache_hits_total": ("hit", ()),
    "hybridgate_request_seconds_bucket": ("lat", ("route", "le")),
    "hybridgate_first_token_seconds_bucket": ("ttft", ("route", "le")),
}


def read_counters(metrics: Metrics) -> Counts:
    """Every sampled counter's current value, as ``field|label|label`` -> value (histograms summed over backends)."""
    out: Counts = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            spec = _FIELDS.get(sample.name)
            if spec is None:
                continue
            prefix, labels = spec
            key = "|".join([prefix, *(str(sample.labels.get(lab, "")).replace("|", "/") for lab in labels)])
            out[key] = out.get(key, 0.0) + float(sample.value)
    return out


def difference(now: Counts, before: Counts) -> Counts:
    """What was counted between two readings; a counter that went down (a restarted registry) counts from zero."""
    out: Counts = {}
    for k, v in now.items():
        d = v - before.get(k, 0.0)
        if d < 0:
            d = v
        if d:
            out[k] = d
    return out


def add_into(total: Counts, more: Counts) -> None:
    for k, v in more.items():
        total[k] = total.get(k, 0.0) + v


class Ring(Protocol):
    async def add(self, res: Resolution, bucket: int, deltas: Counts) -> None: ...

    async def read(self, res: Resolution, first: int, last: int) -> list[tuple[int, Counts]]:
        """The buckets starting in [first, last], oldest first; empty buckets are left out."""
        ...

    async def aclose(self) -> None: ...


class MemoryRing:
    kind = "memory"

    def __init__(self) -> None:
        self._rings: dict[str, OrderedDict[int, Counts]] = {r.name: OrderedDict() for r in RESOLUTIONS.values()}

    async def add(self, res: Resolution, bucket: int, deltas: Counts) -> None:
        ring = self._rings[res.name]
        add_into(ring.setdefault(bucket, {}), deltas)
        while len(ring) > res.slots or (ring and next(iter(ring)) <= bucket - res.span_s):
            ring.popitem(last=False)

    async def read(self, res: Resolution, first: int, last: int) -> list[tuple[int, Counts]]:
        return [(t, dict(c)) for t, c in self._rings[res.name].items() if first <= t <= last]

    async def aclose(self) -> None:
        return None


class RedisRing:
    """One hash per bucket (``hybridgate:ui:<ring>:<start>``), expiring once it falls out of its ring."""

    kind = "redis"

    def __init__(self, url: str, timeout_s: float = 0.5) -> None:
        import redis.asyncio as aioredis

        # Buckets two or more behind the current one no longer change (every replica samples each second into
        # the bucket of its clock), so they are read from Redis once and kept: a poll reads two hashes.
        self._closed: dict[tuple[str, int], Counts] = {}
        self._r = aioredis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, decode_responses=True)

    @staticmethod
    def _key(res: Resolution, bucket: int) -> str:
        return f"hybridgate:ui:{res.name}:{bucket}"

    async def add(self, res: Resolution, bucket: int, deltas: Counts) -> None:
        key = self._key(res, bucket)
        async with self._r.pipeline(transaction=False) as p:
            for field, value in deltas.items():
                p.hincrbyfloat(key, field, value)
            p.expire(key, res.span_s + res.bucket_s)
            await p.execute()

    async def read(self, res: Resolution, first: int, last: int) -> list[tuple[int, Counts]]:
        starts = list(range(first, last + 1, res.bucket_s))
        wanted = [t for t in starts if (res.name, t) not in self._closed]
        async with self._r.pipeline(transaction=False) as p:
            for t in wanted:
                p.hgetall(self._key(res, t))
            rows = await p.execute()
        fetched = {t: {k: float(v) for k, v in row.items()} for t, row in zip(wanted, rows)}
        for t, c in fetched.items():
            if t < last - res.bucket_s:
                self._closed[(res.name, t)] = c
        for key in [k for k in self._closed if k[0] == res.name and k[1] < first]:
            del self._closed[key]
        out = [(t, dict(fetched[t]) if t in fetched else dict(self._closed[(res.name, t)])) for t in starts]
        return [(t, c) for t, c in out if c]

    async def aclose(self) -> None:
        await self._r.aclose()


class DecisionTail:
    """The decisions logged since the last call, newest first: the counters do not carry a collaborative answer's
    mode, the decision log does. Reads grow from a few records until they reach what was already seen, so a
    sample reads what is new, not the whole log."""

    def __init__(self, read: Callable[[int], Awaitable[list[dict[str, Any]]]], cap: int = 10_000) -> None:
        self.read = read
        self.cap = cap
        self.seen_ts = time.time()  # what was logged before this process started was counted by the one before
        self.seen_ids: set[str] = set()

    async def new(self) -> list[dict[str, Any]]:
        n = 32
        while True:
            recent = await self.read(n)
            if len(recent) < n or n >= self.cap or (recent[-1].get("ts") or 0) < self.seen_ts:
                break
            n = min(self.cap, n * 4)
        fresh = [d for d in recent if (d.get("ts") or 0) > self.seen_ts or ((d.get("ts") or 0) == self.seen_ts and d.get("id") not in self.seen_ids)]
        if fresh:
            top = max(float(d.get("ts") or 0) for d in fresh)
            self.seen_ids = {str(d.get("id")) for d in recent if (d.get("ts") or 0) == top}
            self.seen_ts = top
        return fresh


class HistorySampler:
    """Samples ``metrics`` every ``sample_s`` into the rings. Reads add what was counted since the last sample
    (one more reading of the counters), so a page sees a request the moment it is counted."""

    def __init__(
        self,
        metrics: Metrics,
        redis_url: str | None = None,
        sample_s: float = 1.0,
        thresholds: Callable[[], tuple[float | None, float | None]] | None = None,
        decisions: Callable[[int], Awaitable[list[dict[str, Any]]]] | None = None,
    ) -> None:
        self.metrics = metrics
        self.tail = DecisionTail(decisions) if decisions is not None else None
        self._thresholds_of = thresholds
        self.thresholds: deque[dict[str, Any]] = deque(maxlen=100)  # (t_cloud, t_local) each time they changed
        self.memory = MemoryRing()
        self.redis: RedisRing | None = RedisRing(redis_url) if redis_url else None
        self._last = read_counters(metrics)
        self._lock = asyncio.Lock()
        self._redis_failed_at = 0.0
        self.samples = 0
        self._task = Periodic("dashboard history", self.sample, sample_s)

    @property
    def kind(self) -> str:
        return "redis" if self.redis is not None else "memory"

    def start(self) -> None:
        self._task.start()

    async def aclose(self) -> None:
        await self._task.aclose()
        await self.sample()  # what was counted since the last tick is kept, not lost
        if self.redis is not None:
            await self.redis.aclose()

    def pending(self) -> Counts:
        """What was counted since the last sample; not yet in any bucket."""
        return difference(read_counters(self.metrics), self._last)

    async def sample(self, now: float | None = None) -> None:
        async with self._lock:
            current = read_counters(self.metrics)
            deltas = difference(current, self._last)
            self._last = current
            self.samples += 1
            self._watch_thresholds()
            if self.tail is not None:
                try:
                    for d in await self.tail.new():
                        if d.get("route") == "collab" and d.get("status") == "ok":
                            key = f"mode|{(d.get('decided') or {}).get('mode') or 'unknown'}"
                            deltas[key] = deltas.get(key, 0.0) + 1
                except Exception as exc:  # noqa: BLE001 - the state store's own fallback logs its outages
                    log.debug("dashboard history: decision log not read: %s", exc)
            if not deltas:
                return
            t = time.time() if now is None else now
            for res in RESOLUTIONS.values():
                await self.memory.add(res, res.start_of(t), deltas)
                if self.redis is not None:
                    try:
                        await self.redis.add(res, res.start_of(t), deltas)
                    except Exception as exc:  # noqa: BLE001 - Redis away: memory keeps the history meanwhile
                        self._redis_down(exc)

    def _watch_thresholds(self) -> None:
        """Recalibrations and reloads move the thresholds; their history is sampled, like the counters."""
        if self._thresholds_of is None:
            return
        t_cloud, t_local = self._thresholds_of()
        last = self.thresholds[-1] if self.thresholds else None
        if last is None or (last["t_cloud"], last["t_local"]) != (t_cloud, t_local):
            self.thresholds.append({"ts": round(time.time(), 3), "t_cloud": t_cloud, "t_local": t_local})

    def _redis_down(self, exc: Exception) -> None:
        if time.monotonic() - self._redis_failed_at > 60:
            log.warning("dashboard history: Redis unreachable (%s); keeping it in memory meanwhile", exc)
        self._redis_failed_at = time.monotonic()

    async def buckets(self, res: Resolution, now: float | None = None) -> list[tuple[int, Counts]]:
        """The ring's buckets over its span up to ``now``, the current one including what is not yet sampled."""
        t = time.time() if now is None else now
        last = res.start_of(t)
        first = last - res.span_s + res.bucket_s
        rows: list[tuple[int, Counts]] | None = None
        if self.redis is not None:
            try:
                rows = await self.redis.read(res, first, last)
            except Exception as exc:  # noqa: BLE001
                self._redis_down(exc)
        if rows is None:
            rows = await self.memory.read(res, first, last)
        extra = self.pending()
        if extra:
            if rows and rows[-1][0] == last:
                add_into(rows[-1][1], extra)
            else:
                rows.append((last, extra))
        return rows


def quantile_from_buckets(cumulative: dict[float, float], q: float) -> float | None:
    """Prometheus's histogram_quantile: linear within the bucket the rank falls in; None without observations."""
    bounds = sorted(cumulative)
    if not bounds:
        return None
    total = cumulative[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for b in bounds:
        c = cumulative[b]
        if c >= rank:
            if math.isinf(b):
                return prev_bound  # beyond the last finite bound: the bound is all that is known
            if c == prev_count:
                return b
            return prev_bound + (b - prev_bound) * (rank - prev_count) / (c - prev_count)
        prev_bound, prev_count = b, c
    return prev_bound

