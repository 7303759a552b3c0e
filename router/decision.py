"""The vocabulary shared by the router and the gateway."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hybridgate.router.node_choice import NodeScore


class Route(str, Enum):
    LOCAL = "local"
    CLOUD = "cloud"
    COLLAB = "collaborative"  # the local model does the preliminary work, the cloud model the rest


class Mode(str, Enum):
    """How a collaborative answer splits the work (``serving/collab.py`` carries it out)."""

    CASCADE = "cascade"  # local answers; escalate to the cloud when its confidence is low
    CONDENSE = "condense"  # local picks what the question needs from a long prompt; cloud answers from that
    REDACT = "redact"  # personal data replaced by placeholders before the cloud call, restored after
    DRAFT_REFINE = "draft-refine"  # local drafts, cloud corrects and completes the draft

    @property
    def local_generates(self) -> bool:
        """Whether the local model has to generate (and so hold the whole prompt) in this mode."""
        return self in (Mode.CASCADE, Mode.DRAFT_REFINE)


@dataclass(frozen=True)
class RouteQuery:
    """What the router may know about a request: text and counts, never the client.

    ``text`` is the conversation flattened to what a scorer reads (the last user
    turn weighs most, so it comes first); ``prompt_tokens`` is counted by the
    local model's tokenizer when one is loaded.
    """

    text: str
    prompt_tokens: int
    n_messages: int
    requested_model: str = "hybridgate/auto"
    personal_data: tuple[str, ...] = ()  # kinds found in the messages (router.privacy)
    privacy_strict: bool = False  # the client forbids the cloud for this request
    deadline_ms: float | None = None  # the client's budget for the time to the first token
    needs_tools: bool = False  # the answer may be a tool call (tools declared, tool_choice not none)


@dataclass(frozen=True)
class RouteContext:
    """The state of the world the decision depends on, passed in so the policy stays pure."""

    backends: Mapping[str, Route]
    healthy: frozenset[str]
    local_context_tokens: int | None = None
    overflow_to_cloud: bool = True
    cloud_budget_exhausted: bool = False
    latency_ms: Mapping[str, float] = field(default_factory=dict)  # expected time to first token per backend
    overloaded: frozenset[str] = frozenset()  # backends whose queue is full
    energy_budget_exhausted: bool = False  # the key's daily energy budget is spent
    energy_cap_j: float | None = None  # the most one answer of this key may use, local and cloud together
    expected_joules: Mapping[Route, float] = field(default_factory=dict)  # this request's energy estimate per route
    node_scores: Mapping[str, NodeScore] = field(default_factory=dict)  # weighted node choice; empty: by latency_ms

    def route_joules(self, route: Route, mode: Mode | None) -> float | None:
        """This request's expected energy on ``route``: a collaborative answer in which the local model generates
        costs both sides, the other modes about the cloud's (the local model only reads)."""
        local, cloud = self.expected_joules.get(Route.LOCAL), self.expected_joules.get(Route.CLOUD)
        if route is Route.COLLAB:
            if cloud is None:
                return None
            return cloud + (local or 0.0) if mode is not None and mode.local_generates else cloud
        return local if route is Route.LOCAL else cloud

    def available(self, route: Route, *, busy_ok: bool = False) -> list[str]:
        """Healthy backends of ``route`` (and not overloaded, unless ``busy_ok``), the fastest expected first.

        With node scores, by each node's predicted total time (its weighted
        load, capability and network parts); otherwise by the moving estimate
        of its first-token latency. A backend never measured counts as
        fastest, so a new node gets tried and measured; ties keep the
        configured order. Busy backends come last.
        """
        names = [n for n, r in self.backends.items() if r is route and n in self.healthy and (busy_ok or n not in self.overloaded)]
        return sorted(names, key=lambda n: (n in self.overloaded, self._expected(n)))

    def _expected(self, name: str) -> float:
        score = self.node_scores.get(name)
        return score.total_ms if score is not None else self.latency_ms.get(name, 0.0)

    def expected_ms(self, route: Route) -> float | None:
        """The first-token latency expected on ``route`` (the deadline rule's figure)."""
        best = self.available(route)
        return None if not best else self.latency_ms.get(best[0], 0.0)


@dataclass(frozen=True)
class Signal:
    """One thing about the query that moved its score, and by how much (score units, + toward the cloud)."""

    name: str
    push: float

    def __str__(self) -> str:
        return f"{self.name} {self.push:+.2f}"


@dataclass(frozen=True)
class Decision:
    """The router's verdict on one request, before any backend is called: the one name for it. What then
    happened to the answer (backend used, fallback, cost, energy) is the gateway's ``Routing``."""

    route: Route
    backend: str | None
    score: float | None
    threshold: float | None
    router: str
    reasons: tuple[str, ...] = field(default_factory=tuple)
    router_version: str | None = None
    t_local: float | None = None
    mode: Mode | None = None  # set when route is COLLAB
    cloud_backend: str | None = None  # the cloud side of a collaborative answer
    fallbacks: tuple[str, ...] = ()  # other backends of the same route, in order, for failover before the first token
    personal_data: tuple[str, ...] = ()
    signals: tuple[Signal, ...] = ()  # what moved the score most (empty for pins and scorers that cannot say)
    private: bool = False  # no cloud backend may see this request (strict, or personal data kept on the device)
    redact_only: bool = False  # the cloud may see it only with its personal data replaced (the redact mode)
    nodes: tuple[NodeScore, ...] = ()  # the candidates of the chosen route, as scored, in the order tried
    snapshot: int | None = None  # the serial of the routing snapshot (scorer, thresholds) it was decided with

    @property
    def cloud_forbidden(self) -> bool:
        """Whether a cloud backend may not see this request as decided: never when private, and only through the
        redact mode when redact-only. The policy checks its decisions with it, the gateway its calls."""
        return self.private or (self.redact_only and self.mode is not Mode.REDACT)

    @property
    def pinned(self) -> bool:
        """The client named the route, a mode or a backend: only ``auto`` decisions carry a score."""
        return self.score is None

    def as_dict(self) -> dict[str, object]:
        return {
            "route": self.route.value,
            "backend": self.backend,
            "score": None if self.score is None else round(self.score, 4),
            "threshold": self.threshold,
            "t_local": self.t_local,
            "mode": None if self.mode is None else self.mode.value,
            "cloud_backend": self.cloud_backend,
            "fallbacks": list(self.fallbacks),
            "personal_data": list(self.personal_data),
            "private": self.private,
            "router": self.router,
            "router_version": self.router_version,
            "reasons": list(self.reasons),
            "signals": [{"name": s.name, "push": s.push} for s in self.signals],
            **({"nodes": [n.as_dict() for n in self.nodes]} if self.nodes else {}),
        }
