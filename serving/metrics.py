"""Prometheus metrics, each in a registry of the app's own so tests can start many gateways.

Under ``hybridgate serve --workers N`` (serving/workers.py) every worker writes its values to files in
``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess mode, chosen when that variable is set before
the library is imported), and ``registry`` reads all of them: whichever worker answers ``/metrics`` (or feeds
the dashboard) gives the machine's totals. Counters and histograms add up across workers; a gauge says how:
the gateway sets its gauges when ``/metrics`` is scraped, so each reports the most recent value any live worker
wrote.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_DECISION_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


class _ZeroingGauge(Gauge):
    """A labelled gauge whose ``clear()`` zeroes what it had set in multiprocess mode, where prometheus_client
    cannot remove a label set (each worker's file keeps it): a cleared 1 (an old router version) must read 0."""

    def clear(self) -> None:
        if not multiprocess():
            super().clear()
            return
        with self._lock:
            children = list(self._metrics.values())
        for child in children:
            child.set(0)


class Metrics:
    def __init__(self) -> None:
        # The metrics register here; ``registry`` is what is read (the same one, or all workers' files).
        r = CollectorRegistry()
        gauge: dict[str, Any] = {"multiprocess_mode": "livemostrecent"}
        self.requests = Counter(
            "hybridgate_requests", "Chat requests by route, backend and status", ["route", "backend", "status"], registry=r
        )
        self.latency = Histogram(
            "hybridgate_request_seconds", "Time to the whole answer", ["route", "backend"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.first_token = Histogram(
            "hybridgate_first_token_seconds", "Time to the first streamed token", ["route", "backend"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.decision = Histogram(
            "hybridgate_decision_seconds", "Time the router took to decide", buckets=_DECISION_BUCKETS, registry=r
        )
        self.tokens = Counter("hybridgate_tokens", "Tokens by backend and kind", ["backend", "kind"], registry=r)
        self.cloud_spend = Counter("hybridgate_cloud_spend_usd", "Money spent on cloud answers", ["backend"], registry=r)
        self.fallbacks = Counter(
            "hybridgate_fallbacks", "Answers that came from another route than decided", ["from_backend", "to_backend"],
            registry=r,
        )
        self.rejections = Counter("hybridgate_rejections", "Requests refused before generation", ["reason"], registry=r)
        self.energy = Counter(
            "hybridgate_energy_joules", "Energy of the answers, by route, side and how it was found", ["route", "side", "method"], registry=r
        )
        self.cache_hits = Counter("hybridgate_cache_hits", "Answers served from the response cache", registry=r)
        self.queue_depth = Gauge(
            "hybridgate_local_queue_depth", "Generations running or waiting", ["backend"], registry=r, **gauge
        )
        self.state_degraded = Gauge("hybridgate_state_degraded", "1 while Redis is unreachable", registry=r, **gauge)
        self.router_info = _ZeroingGauge(
            "hybridgate_router_info", "1 for the router version in use", ["router", "version"], registry=r, **gauge
        )
        self.registry = r
        self._children: dict[tuple[str, tuple[str, ...]], Any] = {}
        if multiprocess():
            from prometheus_client.multiprocess import MultiProcessCollector

            self.registry = CollectorRegistry()
            MultiProcessCollector(self.registry)

    def child(self, metric: Counter | Histogram, *values: str) -> Any:
        """``metric.labels(*values)``, looked up once per label set: prometheus_client validates the values and
        takes a lock on every call, several times per answer. Counters and histograms only (a cleared gauge's
        children are new objects)."""
        key = (metric._name, values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found

    def render(self) -> bytes:
        return generate_latest(self.registry)
