"""What the gateway measures about each node, for the weighted node choice (``router/node_choice.py``).

- **load**: the requests queued or running there. A node that reports it (a
  Prometheus ``/metrics`` gauge such as llama.cpp's ``llamacpp:requests_processing``
  and ``llamacpp:requests_deferred``, or vLLM's ``vllm:num_requests_running``
  and ``vllm:num_requests_waiting``; ``load_metrics`` in the node's config) is
  read at each health probe; otherwise, and between probes, what this gateway
  itself has in flight there counts. The in-process model knows its queue.
- **capability**: milliseconds per answer token, a moving average over its
  answers with the load each met divided out (a node serving n requests gives
  each about 1/n of its speed); until measured, from the node's configured
  ``tokens_per_s``, or a default that an ``accelerator: true`` node beats
  fourfold.
- **network**: the health probe's round trip (a moving average).

Each answer's parts at the moment it was sent and the time it really took
train the gateway's weights (:class:`~hybridgate.classifiers.node_weights.OnlineNodeRegression`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from hybridgate.classifiers.node_weights import NodeFeatures, NodeWeights, OnlineNodeRegression
from hybridgate.serving.smoothing import smoothed

ACCELERATOR_SPEEDUP = 4.0
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{[^}]*\})?\s+([-+0-9.eEinfNa]+)(?:\s+\d+)?$")


def read_gauges(text: str, names: Iterable[str]) -> float | None:
    """The sum of the named gauges in a Prometheus text exposition (every label set), or None if none is there."""
    wanted, total, seen = set(names), 0.0, False
    for line in text.splitlines()[:20_000]:
        if not line or line[0] == "#":
            continue
        m = _SAMPLE.match(line.strip())
        if m is None or m.group(1) not in wanted:
            continue
        try:
            value = float(m.group(2))
        except ValueError:
            continue
        if value == value and abs(value) != float("inf"):
            total, seen = total + max(0.0, value), True
    return total if seen else None


class LazyNodeRegression(OnlineNodeRegression):
    """The regression, solved when its weights are read rather than at every answer it learns from.

    Each answer adds to the sums (a few array operations); the solve (a 4x4 system, then clipping) waits until
    a decision, ``describe`` or an offer of fleet weights reads :attr:`weights`. Where several answers finish
    between two reads (concurrent requests, or a node choice by latency that never reads them), it is done once.
    The weights read are the same as when each answer solved."""

    def __init__(self, prior: NodeWeights = NodeWeights(), **kw: float | int) -> None:
        self._stale = False
        self._deferring = False
        super().__init__(prior, **kw)  # type: ignore[arg-type]

    @property  # type: ignore[override]
    def weights(self) -> NodeWeights:
        if self._stale:
            self._stale = False
            self._weights = super()._solve()
        return self._weights

    @weights.setter
    def weights(self, value: NodeWeights) -> None:
        if self._deferring:  # observe() solving: note that the weights must be solved before the next read
            self._stale = True
            return
        self._weights, self._stale = value, False

    def _solve(self) -> NodeWeights:
        return self._weights if self._deferring else super()._solve()

    def observe(self, parts: Any, total_ms: float) -> None:
        self._deferring = True
        try:
            super().observe(parts, total_ms)
        finally:
            self._deferring = False


class Queued(Protocol):
    """An in-process backend, which knows its own queue."""

    @property
    def queue_depth(self) -> int: ...


@dataclass
class NodeProfile:
    """One node's configuration and running measurements."""

    name: str
    ms_per_token: float
    accelerator: bool = False
    in_flight: int = 0
    reported_load: float | None = None
    reported_at: float = 0.0
    rtt_ms: float = 0.0
    speed_measured: int = 0
    fleet_in_flight: float = 0.0  # what the other replicas sharing this node have in flight there (node_share.py)
    fleet_ms_per_token: float | None = None  # the speed all replicas together measured, weighted by their answers


@dataclass
class Ticket:
    """An answer on its way: the node, when it was sent, and what the node looked like then."""

    node: str
    started: float
    features: NodeFeatures
    done: bool = field(default=False)


class NodeStats:
    def __init__(
        self,
        *,
        default_tokens_per_s: float = 20.0,
        alpha: float = 0.3,
        report_ttl_s: float = 30.0,
        weights: NodeWeights = NodeWeights(),
        learn: bool = True,
        forget: float = 0.995,
        prior_strength: float = 20.0,
    ) -> None:
        self.default_ms_per_token = 1000.0 / default_tokens_per_s
        self.alpha = alpha
        self.report_ttl_s = report_ttl_s
        self.learn = learn
        self.nodes: dict[str, NodeProfile] = {}
        self.local_queue: dict[str, Queued] = {}  # in-process backends: their own queue depth is the load
        self.regression = LazyNodeRegression(weights, forget=forget, prior_strength=prior_strength)

    @property
    def weights(self) -> NodeWeights:
        return self.regression.weights

    def add(self, name: str, *, tokens_per_s: float | None = None, accelerator: bool = False, queue: Queued | None = None) -> None:
        guess = 1000.0 / tokens_per_s if tokens_per_s else self.default_ms_per_token / (ACCELERATOR_SPEEDUP if accelerator else 1.0)
        self.nodes[name] = NodeProfile(name, guess, accelerator)
        if queue is not None:
            self.local_queue[name] = queue

    # -- what probes report ----------------------------------------------------------------------
    def observe_rtt(self, name: str, seconds: float) -> None:
        node = self.nodes.get(name)
        if node is not None:
            ms = seconds * 1000.0
            node.rtt_ms = smoothed(node.rtt_ms or None, ms, self.alpha)  # 0: no probe answered yet

    def observe_load(self, name: str, load: float | None) -> None:
        node = self.nodes.get(name)
        if node is not None and load is not None:
            node.reported_load, node.reported_at = load, time.monotonic()

    # -- features --------------------------------------------------------------------------------
    def load(self, name: str) -> float:
        node = self.nodes[name]
        queue = self.local_queue.get(name)
        if queue is not None:
            return float(queue.queue_depth)
        fresh = node.reported_load is not None and time.monotonic() - node.reported_at <= self.report_ttl_s
        # A report is at most a probe interval old and counts this gateway's requests too; what was sent since counts.
        return max(float(node.in_flight) + node.fleet_in_flight, node.reported_load if fresh else 0.0)  # type: ignore[arg-type]

    def features(self, name: str) -> NodeFeatures:
        node = self.nodes[name]
        speed = node.ms_per_token if node.fleet_ms_per_token is None else node.fleet_ms_per_token
        return NodeFeatures(self.load(name), speed, node.rtt_ms, node.accelerator)

    # -- what replicas behind one load balancer share -------------------------------------------
    def shared(self) -> dict[str, dict[str, float]]:
        """This gateway's view of each node others can reach too (not its in-process model, which is its own)."""
        return {
            n: {"in_flight": float(p.in_flight), "ms_per_token": p.ms_per_token, "speed_measured": float(p.speed_measured)}
            for n, p in self.nodes.items()
            if n not in self.local_queue
        }

    def merge_fleet(self, others: Iterable[dict[str, dict[str, float]]]) -> None:
        """The other replicas' views: their requests in flight add to each node's load, and the speed becomes the
        mean of every replica's measurement weighted by how many answers it rests on (this one's included)."""
        views = list(others)
        for name, node in self.nodes.items():
            if name in self.local_queue:
                continue
            rows = [v[name] for v in views if isinstance(v.get(name), dict)]
            node.fleet_in_flight = sum(max(0.0, float(r.get("in_flight", 0.0))) for r in rows)
            measured = [
                (float(r["ms_per_token"]), float(r["speed_measured"]))
                for r in rows
                if float(r.get("speed_measured", 0)) > 0 and 0 < float(r.get("ms_per_token", 0)) < float("inf")
            ]
            if node.speed_measured:
                measured.append((node.ms_per_token, float(node.speed_measured)))
            weight = sum(w for _, w in measured)
            node.fleet_ms_per_token = sum(ms * w for ms, w in measured) / weight if weight > 0 else None

    def all_features(self) -> dict[str, NodeFeatures]:
        return {name: self.features(name) for name in self.nodes}

    # -- answers ---------------------------------------------------------------------------------
    def begin(self, name: str) -> Ticket | None:
        if name not in self.nodes:
            return None
        ticket = Ticket(name, time.perf_counter(), self.features(name))
        self.nodes[name].in_flight += 1
        return ticket

    def abandon(self, ticket: Ticket | None) -> None:
        """A failed answer teaches nothing about the node's speed (its health counts the failure)."""
        if ticket is not None and not ticket.done:
            ticket.done = True
            self.nodes[ticket.node].in_flight -= 1

    def finish(self, ticket: Ticket | None, completion_tokens: int) -> None:
        if ticket is None or ticket.done:
            return
        ticket.done = True
        node = self.nodes[ticket.node]
        node.in_flight -= 1
        total_ms = (time.perf_counter() - ticket.started) * 1000.0
        tokens = max(1, completion_tokens)
        # The node's own speed, with the load it served under taken out (a shared node gives each request a share):
        # what is left when the parts' default weights are right; the fitted weights correct where they are not.
        rate = max(0.0, total_ms - ticket.features.rtt_ms) / (tokens * (1.0 + max(0.0, ticket.features.load)))
        node.ms_per_token = smoothed(None if node.speed_measured == 0 else node.ms_per_token, rate, self.alpha)
        node.speed_measured += 1
        if self.learn:
            self.regression.observe(ticket.features.parts(tokens), total_ms)

    def describe(self) -> dict[str, object]:
        return {
            "weights": self.weights.as_dict(),
            "answers_learnt": self.regression.observed,
            "nodes": {
                n: {"load": self.load(n), "ms_per_token": round(self.features(n).ms_per_token, 3), "rtt_ms": round(p.rtt_ms, 2)}
                for n, p in self.nodes.items()
            },
        }
