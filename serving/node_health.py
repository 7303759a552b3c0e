"""What the router needs to know about each node: is it up, and how fast does it answer.

``LatencyTracker`` keeps a moving estimate of the time to the first token per
backend (exponentially weighted, so a node that slows down is noticed within a
few requests). ``HealthMonitor`` probes every remote backend on an interval
(``GET {api_base}/models``): a failed probe counts as a failure of the node,
like a failed request, so a dead node is rested after ``trip_after`` strikes
even when no request is sent to it, and a resting node comes back as soon as
a probe succeeds after its cool-down. Each probe's round trip, and the load a
node reports on its Prometheus ``/metrics`` (where ``load_metrics`` names the
gauges), go to :class:`~hybridgate.serving.node_stats.NodeStats` for the
weighted node choice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

import httpx

from hybridgate.serving.backends.base import Health
from hybridgate.serving.node_stats import NodeStats, read_gauges
from hybridgate.serving.periodic import Periodic
from hybridgate.serving.smoothing import smoothed

log = logging.getLogger(__name__)


class LatencyTracker:
    def __init__(self, alpha: float = 0.3) -> None:
        self.alpha = alpha
        self._ms: dict[str, float] = {}

    def observe(self, backend: str, seconds: float) -> None:
        ms = seconds * 1000.0
        self._ms[backend] = smoothed(self._ms.get(backend), ms, self.alpha)

    def snapshot(self) -> dict[str, float]:
        return dict(self._ms)


@dataclass
class ProbeTarget:
    name: str
    url: str  # the OpenAI base URL, ending in /v1
    health: Health
    api_key: str | None = None
    load_metrics: tuple[str, ...] = ()  # Prometheus gauges whose sum is the node's queued and running requests
    load_url: str | None = None  # where they are exposed; None: /metrics beside the OpenAI base (…/v1 → …/metrics)
    auth_header: str = "Authorization"  # where the key goes: a bearer token, or Azure's ``api-key`` (providers.py)

    def headers(self) -> dict[str, str]:
        from hybridgate.serving.backends.providers import key_headers

        return key_headers(self.auth_header, self.api_key)

    def metrics_url(self) -> str:
        if self.load_url:
            return self.load_url
        base = self.url.rstrip("/")
        return (base[: -len("/v1")] if base.endswith("/v1") else base) + "/metrics"


class HealthMonitor:
    """Probes each target every ``interval_s``; ``check_once`` is the same, once (tests, start-up)."""

    def __init__(self, targets: Iterable[ProbeTarget], interval_s: float, timeout_s: float, stats: NodeStats | None = None) -> None:
        self.targets = list(targets)
        self.stats = stats
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
        headers = t.headers()
        try:
            started = time.perf_counter()
            r = await self._client.get(t.url.rstrip("/") + "/models", headers=headers)
            if r.status_code >= 500:
                raise httpx.HTTPStatusError(f"status {r.status_code}", request=r.request, response=r)
            if self.stats is not None:
                self.stats.observe_rtt(t.name, time.perf_counter() - started)
                if t.load_metrics:
                    await self._read_load(t, headers)
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

    async def _read_load(self, t: ProbeTarget, headers: dict[str, str]) -> None:
        """The node's own count of queued and running requests; a node that does not say keeps the gateway's count."""
        assert self._client is not None and self.stats is not None
        try:
            r = await self._client.get(t.metrics_url(), headers=headers)
        except httpx.HTTPError as exc:
            log.debug("no load report from %s: %s", t.name, exc)
            return
        if r.status_code == 200 and len(r.content) <= 4_000_000:
            self.stats.observe_load(t.name, read_gauges(r.text, t.load_metrics))

    def start(self) -> None:
        if self.targets:
            self._loop.start()

    async def aclose(self) -> None:
        await self._loop.aclose()
        if self._client is not None:
            await self._client.aclose()
            self._client = None
