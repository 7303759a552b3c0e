"""The vocabulary shared by the router and the gateway."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol


class Route(str, Enum):
    LOCAL = "local"
    CLOUD = "cloud"


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


@dataclass(frozen=True)
class RouteContext:
    """The state of the world the decision depends on, passed in so the policy stays pure."""

    backends: Mapping[str, Route]
    healthy: frozenset[str]
    local_context_tokens: int | None = None
    overflow_to_cloud: bool = True
    cloud_budget_exhausted: bool = False

    def available(self, route: Route) -> list[str]:
        return [name for name, r in self.backends.items() if r is route and name in self.healthy]


@dataclass(frozen=True)
class Decision:
    route: Route
    backend: str | None
    score: float | None
    threshold: float | None
    router: str
    reasons: tuple[str, ...] = field(default_factory=tuple)
    router_version: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "route": self.route.value,
            "backend": self.backend,
            "score": None if self.score is None else round(self.score, 4),
            "threshold": self.threshold,
            "router": self.router,
            "router_version": self.router_version,
            "reasons": list(self.reasons),
        }


class Scorer(Protocol):
    """Anything that says how much a query needs the cloud, from 0 (local is enough) to 1."""

    @property
    def name(self) -> str: ...

    def score(self, query: RouteQuery) -> float: ...
