"""What the router needs to know about each node: is it up, and how fast does it answer.

``LatencyTracker`` keeps a moving estimate of the time to the first token per
backend (exponentially weighted, so a node that slows down is noticed within a
few requests). ``HealthMonitor`` probes every remote backend on an interval
(``GET {api_base}/models``): a failed probe counts as a failure of the node,
like a failed request, so a dead node is rested after ``trip_after`` strikes
even when no request is sent to it, and a resting node comes back as soon as
a probe succeeds after its cool-down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass

import httpx

from hybridgate.serving.backends.base import Health
from hybridgate.serving.periodic import Periodic

log = logging.getLogger(__name__)


class LatencyTracker:
    def __init__(self, alpha: float = 0.3) -> None:
        self.alpha = alpha
        self._ms: dict[str, float] = {}

    def observe(self, backend: str, seconds: float) -> None:
        ms = seconds * 1000.0
        old = self._ms.get(backend)
        self._ms[backend] = ms if old is None else (1 - self.alpha) * old + self.alpha * ms

    def snapshot(self) -> dict[str, float]:
        return dict(self._ms)


@dataclass
class ProbeTarget:
    name: str
    url: str  # the OpenAI base URL, ending in /v1
    health: Health
    api_key: str | None = None


class HealthMonitor:
    """Probes each target every ``interval_s``; ``check_once`` is the same, once (tests, start-up)."""

    def __init__(self, targets: Iterable[ProbeTarget], interval_s: float, timeout_s: float) -> None:
        self.targets = list(targets)
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._loop = Periodic("hybridgate-health", self.check_once, interval_s)
        self._client: httpx.AsyncClient | None = None

    async def check_once(self) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout_s)
        await asyncio.gather(*(self._probe(t) for t in self.targets))

    async def _probe(self, t: ProbeTarget) -> None:
        assert self._client is not None
        headers = {"Authorization": f"Bearer {t.api_key}"} if t.api_key else {}
        try:
            r = await self._client.get(t.url.rstrip("/") + "/models", headers=headers)
            if r.status_code >= 500:
                raise httpx.HTTPStatusError(f"status {r.status_code}", request=r.request, response=r)
        except httpx.HTTPError as exc:
            was = t.health.healthy
            t.health.failed(f"probe failed: {exc.__class__.__name__}")
            if was and not t.health.healthy:
                log.warning("health probes of %s keep failing (%s); resting it", t.name, exc)
            return
        if t.health.consecutive_failures and t.health.healthy:
            log.info("health probe of %s succeeded; back in rotation", t.name)
            t.health.ok()
        elif t.health.healthy:
            t.health.ok()

    def start(self) -> None:
        if self.targets:
            self._loop.start()

    async def aclose(self) -> None:
        await self._loop.aclose()
        if self._client is not None:
            await self._client.aclose()
            self._client = None
