"""What the gateway writes down about one answer: how it was produced, and the line the decision log keeps.

One record (:class:`Routing`) travels with an answer from the decision to the
response: the request path fills in the backend and any fallback, accounting
the cost and energy, and the response turns it into headers and the
``hybridgate`` key. Kept apart from the code that fills it in, so each of
those modules reads the same shape.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from hybridgate.router import Decision, Route
from hybridgate.serving.backends.base import Completion, Delta, Usage
from hybridgate.serving.collab import CollabReport
from hybridgate.serving.energy import Energy
from hybridgate.serving.node_stats import Ticket

# How much of a conversation a scorer reads: enough for the question, bounded so a huge prompt embeds fast.
_SCORED_CHARS = 4000


@dataclass
class Routing:
    """How one answer was produced (the router's :class:`~hybridgate.router.Decision`, then the backend that
    answered, any fallback, cost and energy); it travels in headers and under the ``hybridgate`` key."""

    request_id: str
    decision: Decision
    decision_ms: float
    backend: str
    route: Route
    fallback_from: str | None = None
    fallback_reason: str | None = None
    cache: str | None = None
    usage: Usage | None = None
    cost_usd: float = 0.0
    tried: set[str] = field(default_factory=set)
    collab: CollabReport | None = None
    reserved_usd: float = 0.0  # set aside against the key's budget before a cloud call, released once it is accounted
    reserved_joules: float = 0.0  # set aside against the key's daily energy budget, released once the answer is accounted
    energy_local: Energy | None = None  # what the local model's generation took, as its backend measured it
    energy: dict[str, dict[str, Any]] = field(default_factory=dict)  # per side (local, cloud), set when accounted
    ticket: Ticket | None = None  # a streamed answer's node measurement, finished with the stream
    user: str | None = None  # the request's ``user`` (the client's end-user id), for the operator's decision log

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.request_id,
            "route": self.route.value,
            "backend": self.backend,
            "decision_ms": round(self.decision_ms, 3),
            "decided": self.decision.as_dict(),
            "cost_usd": round(self.cost_usd, 8),
        }
        if self.fallback_from:
            out["fallback"] = {"from": self.fallback_from, "reason": self.fallback_reason}
        if self.collab is not None:
            out["collaboration"] = self.collab.as_dict()
        if self.cache:
            out["cache"] = self.cache
        if self.energy:
            out["energy"] = self.energy
        return out

    def headers(self) -> dict[str, str]:
        score = self.decision.score
        h = {
            "x-hybridgate-route": self.route.value,
            "x-hybridgate-backend": self.backend,
            "x-hybridgate-score": "-" if score is None else f"{score:.4f}",
            "x-hybridgate-router": self.decision.router
            + (f"@{self.decision.router_version}" if self.decision.router_version else ""),
            "x-hybridgate-decision-ms": f"{self.decision_ms:.3f}",
            "x-hybridgate-request-id": self.request_id,
        }
        if self.decision.threshold is not None:
            h["x-hybridgate-threshold"] = f"{self.decision.threshold:.4f}"
        if self.decision.signals:
            # Signal names are fixed identifiers from the router, never text from the request.
            h["x-hybridgate-signals"] = ",".join(f"{sig.name.replace(',', ' ')}={sig.push:+.3f}" for sig in self.decision.signals)
        if self.decision.mode is not None:
            h["x-hybridgate-mode"] = self.decision.mode.value
        if self.fallback_from:
            h["x-hybridgate-fallback"] = self.fallback_from
        if self.cache:
            h["x-hybridgate-cache"] = self.cache
        return h

    def log_entry(self, key: str, usage: Usage, elapsed: float, status: str) -> dict[str, Any]:
        """The decision log's line for this answer (``key`` already the key's id, never the key itself)."""
        return {
            "id": self.request_id,
            "ts": round(time.time(), 3),
            "key": key,
            "status": status,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "latency_ms": round(elapsed * 1000, 2),
            "user": self.user,
            **self.as_dict(),
        }


@dataclass
class Answer:
    completion: Completion
    routing: Routing


@dataclass
class StreamAnswer:
    """A stream whose first piece has already arrived, so the route (and any fallback) is settled."""

    routing: Routing
    first: Delta
    rest: AsyncGenerator[Delta, None]
    started: float = field(default_factory=time.perf_counter)
    messages: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class RequestHints:
    """What a client may say about one request beyond the OpenAI body (``x-hybridgate-*`` headers)."""

    privacy_strict: bool = False
    deadline_ms: float | None = None


def query_text(messages: list[dict[str, Any]]) -> str:
    """The conversation as a scorer reads it, and as a label's vector is embedded from: the last user turn first."""
    last_user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    rest = "\n".join(m["content"] for m in messages if m["content"] is not last_user)
    return (last_user + "\n" + rest)[:_SCORED_CHARS]
