"""What every backend speaks: one request shape in, text and token counts out."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from hybridgate.router import Route
from hybridgate.serving.energy import Energy


@dataclass(frozen=True)
class ChatParams:
    messages: list[dict[str, Any]]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    user: str | None = None
    response_format: dict[str, Any] | None = None  # OpenAI's object: type json_object or json_schema (text: None)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    n: int = 1
    logprobs: bool = False
    top_logprobs: int | None = None

    @property
    def uses_tools(self) -> bool:
        return bool(self.tools) and self.tool_choice != "none"


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str
    usage: Usage  # of every choice together
    model: str
    confidence: float | None = None  # geometric-mean probability of the generated tokens, when measured
    tool_calls: list[dict[str, Any]] | None = None  # OpenAI's shape: id, type function, name and JSON arguments
    logprobs: dict[str, Any] | None = None  # OpenAI's choice.logprobs: {"content": [...]}
    alternatives: tuple[Completion, ...] = ()  # choices 1..n-1 when n > 1 (their usage is in this one's)
    energy: Energy | None = None  # what generating every choice took, where the backend can tell (the local model)


@dataclass(frozen=True)
class Delta:
    """One streamed piece; the last event of a stream carries ``usage`` and a finish reason."""

    text: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None
    tool_calls: list[dict[str, Any]] | None = None  # OpenAI's streamed tool-call pieces (index, id, function)
    energy: Energy | None = None  # on the last delta of a local stream


class BackendError(Exception):
    """The backend failed; the gateway may fall back, else it answers 502."""

    status = 502
    code = "backend_error"

    def __init__(self, message: str, *, backend: str = "") -> None:
        super().__init__(message)
        self.backend = backend


class BackendTimeout(BackendError):
    status = 504
    code = "backend_timeout"


class BackendUnavailable(BackendError):
    """Could not reach the backend at all (connection refused, DNS, circuit open)."""

    code = "backend_unavailable"


class UpstreamRejected(BackendError):
    """The backend judged the request itself bad (a 4xx): falling back would not help."""

    status = 400
    code = "upstream_rejected"


class RequestUnsendable(UpstreamRejected):
    """The request's own content cannot be encoded or sent: the client's fault, a 400 for that request, and never
    a failure of the backend (its circuit breaker counts only what the provider or the network did)."""

    code = "invalid_request_content"


class QueueFull(Exception):
    """The local model is busy and its waiting line is full."""

    def __init__(self, backend: str, retry_after_s: int) -> None:
        super().__init__(f"backend {backend!r} is busy: its queue is full")
        self.backend = backend
        self.retry_after_s = retry_after_s


class PromptTooLong(Exception):
    def __init__(self, backend: str, prompt_tokens: int, limit: int) -> None:
        super().__init__(
            # OpenAI's own wording, which client libraries (litellm) recognise as a context-window error.
            f"This model's maximum context length is {limit} tokens with room to answer. However, your messages "
            f"resulted in {prompt_tokens} tokens (backend {backend!r})."
        )
        self.prompt_tokens = prompt_tokens
        self.limit = limit


@dataclass
class Health:
    """A small circuit breaker: after ``trip_after`` failures in a row the backend rests for ``cooldown_s``."""

    trip_after: int = 3
    cooldown_s: float = 15.0
    consecutive_failures: int = 0
    last_error: str | None = None
    last_ok_at: float | None = None
    open_until: float = 0.0

    def ok(self) -> None:
        self.consecutive_failures = 0
        self.last_ok_at = time.time()
        self.open_until = 0.0

    def failed(self, error: str) -> None:
        self.consecutive_failures += 1
        self.last_error = error
        if self.consecutive_failures >= self.trip_after:
            self.open_until = time.monotonic() + self.cooldown_s

    @property
    def healthy(self) -> bool:
        return time.monotonic() >= self.open_until

    def as_dict(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "consecutive_failures": self.consecutive_failures,
            "last_error": self.last_error,
        }


class Backend(Protocol):
    name: str
    route: Route
    model_id: str
    health: Health

    async def complete(self, params: ChatParams) -> Completion: ...

    def stream(self, params: ChatParams) -> AsyncIterator[Delta]: ...

    def describe(self) -> dict[str, Any]: ...

    async def aclose(self) -> None: ...
