"""The Python SDK: ``hybridgate.Client`` and ``hybridgate.AsyncClient``.

The OpenAI SDK works against the gateway too; this client adds what it hides:
the routing of each answer (route, backend, score, fallback) as typed fields,
and errors as typed exceptions that carry ``Retry-After``.

It needs httpx and nothing of the server (fastapi, uvicorn, llama.cpp, litellm): an application that only
calls a gateway installs none of them through it, and ``tests/test_sdk.py`` checks that importing it loads none.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx

__all__ = [
    "APIConnectionError",
    "AsyncChatStream",
    "AsyncClient",
    "AuthenticationError",
    "BackendError",
    "BadRequestError",
    "ChatResult",
    "ChatStream",
    "Client",
    "Decision",
    "HybridgateError",
    "Messages",
    "NotFoundError",
    "RateLimitError",
    "Routing",
    "ServiceUnavailableError",
]

Messages = str | list[dict[str, Any]]


class HybridgateError(Exception):
    status: int | None = None

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None, type: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.type = type
        self.retry_after = retry_after


class APIConnectionError(HybridgateError):
    """The gateway could not be reached."""


class BadRequestError(HybridgateError):
    """400, 413 or 422: the request itself is wrong."""


class AuthenticationError(HybridgateError):
    pass


class NotFoundError(HybridgateError):
    pass


class RateLimitError(HybridgateError):
    """429: e.g. the key's daily cloud budget is spent."""


class ServiceUnavailableError(HybridgateError):
    """503: the local queue is full or no backend is healthy; retry after ``retry_after`` seconds."""


class BackendError(HybridgateError):
    """502/504: the chosen backend failed and no fallback was allowed."""


_BY_STATUS: dict[int, type[HybridgateError]] = {
    400: BadRequestError, 413: BadRequestError, 422: BadRequestError, 401: AuthenticationError,
    404: NotFoundError, 429: RateLimitError, 503: ServiceUnavailableError, 502: BackendError, 504: BackendError,
}


def _raise_for(resp: httpx.Response, body: bytes) -> None:
    if resp.status_code < 400:
        return
    try:
        err = json.loads(body)["error"]
        message, code, kind = err.get("message", ""), err.get("code"), err.get("type")
    except (ValueError, KeyError, TypeError):
        message, code, kind = body.decode("utf-8", errors="replace")[:300], None, None
    retry = resp.headers.get("retry-after")
    cls = _BY_STATUS.get(resp.status_code, HybridgateError)
    raise cls(message, status=resp.status_code, code=code, type=kind, retry_after=float(retry) if retry else None)


@dataclass(frozen=True)
class Routing:
    route: str
    backend: str
    score: float | None
    decision_ms: float
    request_id: str
    fallback_from: str | None = None
    cache: str | None = None
    reasons: tuple[str, ...] = ()
    cost_usd: float | None = None
    router: str | None = None
    router_version: str | None = None
    threshold: float | None = None
    mode: str | None = None
    collaboration: dict[str, Any] | None = None
    signals: tuple[tuple[str, float], ...] = ()  # what moved the score most: (name, push on the score)

    @classmethod
    def from_headers(cls, h: httpx.Headers) -> Routing:
        score = h.get("x-hybridgate-score", "-")
        router, _, version = (h.get("x-hybridgate-router") or "").partition("@")
        threshold = h.get("x-hybridgate-threshold")
        return cls(
            route=h.get("x-hybridgate-route", ""),
            backend=h.get("x-hybridgate-backend", ""),
            score=None if score == "-" else float(score),
            decision_ms=float(h.get("x-hybridgate-decision-ms", "0")),
            request_id=h.get("x-hybridgate-request-id", ""),
            fallback_from=h.get("x-hybridgate-fallback"),
            cache=h.get("x-hybridgate-cache"),
            router=router or None,
            router_version=version or None,
            threshold=None if threshold is None else float(threshold),
            mode=h.get("x-hybridgate-mode"),
            signals=_signals_header(h.get("x-hybridgate-signals")),
        )

    def with_body(self, info: dict[str, Any] | None) -> Routing:
        if not info:
            return self
        decided = info.get("decided", {})
        return Routing(
            route=info.get("route", self.route),
            backend=info.get("backend", self.backend),
            score=decided.get("score", self.score),
            decision_ms=info.get("decision_ms", self.decision_ms),
            request_id=info.get("id", self.request_id),
            fallback_from=(info.get("fallback") or {}).get("from", self.fallback_from),
            cache=info.get("cache", self.cache),
            reasons=tuple(decided.get("reasons", ())),
            cost_usd=info.get("cost_usd"),
            router=decided.get("router", self.router),
            router_version=decided.get("router_version", self.router_version),
            threshold=decided.get("threshold", self.threshold),
            mode=decided.get("mode", self.mode),
            collaboration=info.get("collaboration", self.collaboration),
            signals=_signals(decided.get("signals")) or self.signals,
        )


def _signals(items: Any) -> tuple[tuple[str, float], ...]:
    if not isinstance(items, list):
        return ()
    return tuple((str(s["name"]), float(s["push"])) for s in items if isinstance(s, dict) and "name" in s and "push" in s)


def _signals_header(value: str | None) -> tuple[tuple[str, float], ...]:
    out = []
    for part in (value or "").split(","):
        name, sep, push = part.rpartition("=")
        try:
            if sep:
                out.append((name, float(push)))
        except ValueError:
            continue
    return tuple(out)


@dataclass(frozen=True)
class Decision:
    """What ``POST /v1/route`` answers: the decision for a request, nothing generated."""

    route: str
    backend: str | None
    mode: str | None
    cloud_backend: str | None
    score: float | None
    threshold: float | None
    t_local: float | None
    router: str
    router_version: str | None
    reasons: tuple[str, ...]
    personal_data: tuple[str, ...]
    fallbacks: tuple[str, ...]
    decision_ms: float
    prompt_tokens: int
    signals: tuple[tuple[str, float], ...] = ()

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Decision:
        return cls(
            route=d["route"],
            backend=d.get("backend"),
            mode=d.get("mode"),
            cloud_backend=d.get("cloud_backend"),
            score=d.get("score"),
            threshold=d.get("threshold"),
            t_local=d.get("t_local"),
            router=d.get("router", ""),
            router_version=d.get("router_version"),
            reasons=tuple(d.get("reasons", ())),
            personal_data=tuple(d.get("personal_data", ())),
            fallbacks=tuple(d.get("fallbacks", ())),
            decision_ms=float(d.get("decision_ms", 0.0)),
            prompt_tokens=int(d.get("prompt_tokens", 0)),
            signals=_signals(d.get("signals")),
        )


def _hints(privacy: str | None, deadline_ms: float | None) -> dict[str, str]:
    """The per-request rules, as the headers the gateway reads."""
    h: dict[str, str] = {}
    if privacy is not None:
        h["x-hybridgate-privacy"] = privacy
    if deadline_ms is not None:
        h["x-hybridgate-deadline-ms"] = str(deadline_ms)
    return h


@dataclass(frozen=True)
class ChatResult:
    text: str
    finish_reason: str
    usage: dict[str, int]
    model: str
    routing: Routing
    raw: dict[str, Any] = field(repr=False)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # OpenAI's shape: id, type, function name/arguments

    def json(self) -> Any:
        """The answer parsed as JSON (what ``response_format`` asked for); ValueError when it is not JSON."""
        import json

        return json.loads(self.text)


def _payload(messages: Messages, model: str, stream: bool, params: dict[str, Any]) -> dict[str, Any]:
    msgs = [{"role": "user", "content": messages}] if isinstance(messages, str) else messages
    body = {"model": model, "messages": msgs, **{k: v for k, v in params.items() if v is not None}}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def _result(resp: httpx.Response, data: dict[str, Any]) -> ChatResult:
    choice = data["choices"][0]
    return ChatResult(
        text=choice["message"]["content"] or "",
        finish_reason=choice.get("finish_reason") or "stop",
        usage=data.get("usage", {}),
        model=data.get("model", ""),
        routing=Routing.from_headers(resp.headers).with_body(data.get("hybridgate")),
        raw=data,
        tool_calls=list(choice["message"].get("tool_calls") or []),
    )


class _StreamState:
    """What a stream has told so far; shared by the sync and async streams."""

    def __init__(self, resp: httpx.Response) -> None:
        self.routing = Routing.from_headers(resp.headers)
        self.parts: list[str] = []
        self.finish_reason: str | None = None
        self.usage: dict[str, int] | None = None

    def feed(self, line: str) -> str | None:
        if not line.startswith("data:"):
            return None
        payload = line[5:].strip()
        if payload == "[DONE]":
            return None
        event = json.loads(payload)
        if "error" in event:
            err = event["error"]
            raise BackendError(err.get("message", "stream failed"), code=err.get("code"), type=err.get("type"))
        if event.get("usage"):
            self.usage = event["usage"]
        if event.get("hybridgate"):
            self.routing = self.routing.with_body(event["hybridgate"])
        for choice in event.get("choices") or []:
            self.finish_reason = choice.get("finish_reason") or self.finish_reason
            text = (choice.get("delta") or {}).get("content")
            if text:
                self.parts.append(text)
                return str(text)
        return None

    @property
    def text(self) -> str:
        return "".join(self.parts)


class ChatStream(_StreamState):
    """Iterate for text pieces; ``routing`` is known before the first piece, ``usage`` after the last."""

    def __init__(self, resp: httpx.Response) -> None:
        super().__init__(resp)
        self._resp = resp

    def __iter__(self) -> Iterator[str]:
        for line in self._resp.iter_lines():
            piece = self.feed(line)
            if piece:
                yield piece


class AsyncChatStream(_StreamState):
    def __init__(self, resp: httpx.Response) -> None:
        super().__init__(resp)
        self._resp = resp

    async def __aiter__(self) -> AsyncIterator[str]:
        async for line in self._resp.aiter_lines():
            piece = self.feed(line)
            if piece:
                yield piece


def _base(url: str) -> str:
    url = url.rstrip("/")
    return url[:-3] if url.endswith("/v1") else url


class Client:
    def __init__(self, base_url: str = "http://127.0.0.1:8080", api_key: str | None = None, timeout: float = 300.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=_base(base_url), headers=headers, timeout=timeout)

    def _send(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            resp = self._http.request(method, path, **kw)
        except httpx.TransportError as exc:
            raise APIConnectionError(f"cannot reach the gateway: {exc}") from None
        _raise_for(resp, resp.content)
        return resp

    def chat(
        self, messages: Messages, model: str = "hybridgate/auto", *, privacy: str | None = None, deadline_ms: float | None = None, **params: Any
    ) -> ChatResult:
        """``privacy="strict"`` forbids the cloud for this request; ``deadline_ms`` bounds the time to the first token."""
        resp = self._send("POST", "/v1/chat/completions", json=_payload(messages, model, False, params), headers=_hints(privacy, deadline_ms))
        return _result(resp, resp.json())

    def route(
        self, messages: Messages, model: str = "hybridgate/auto", *, privacy: str | None = None, deadline_ms: float | None = None
    ) -> Decision:
        """Where this request would go, and why, without generating anything."""
        resp = self._send("POST", "/v1/route", json=_payload(messages, model, False, {}), headers=_hints(privacy, deadline_ms))
        return Decision.from_json(resp.json())

    def stream(
        self, messages: Messages, model: str = "hybridgate/auto", *, privacy: str | None = None, deadline_ms: float | None = None, **params: Any
    ) -> _SyncStreamContext:
        """Use as ``with client.stream(...) as s: for piece in s: ...``."""
        return _SyncStreamContext(self._http, _payload(messages, model, True, params), _hints(privacy, deadline_ms))

    def models(self) -> list[str]:
        return [m["id"] for m in self._send("GET", "/v1/models").json()["data"]]

    def feedback(self, response_id: str, rating: str | float) -> dict[str, Any]:
        """Rate an answer (``"good"``, ``"bad"``, or 0..1) by its id (``result.routing.request_id``); kept on the device."""
        return dict(self._send("POST", "/v1/feedback", json={"id": response_id, "rating": rating}).json())

    def ready(self) -> dict[str, Any]:
        return dict(self._http.get("/readyz").json())

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _SyncStreamContext:
    def __init__(self, http: httpx.Client, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self._http, self._body, self._headers = http, body, headers or {}
        self._cm: Any = None

    def __enter__(self) -> ChatStream:
        try:
            self._cm = self._http.stream("POST", "/v1/chat/completions", json=self._body, headers=self._headers)
            resp = self._cm.__enter__()
        except httpx.TransportError as exc:
            raise APIConnectionError(f"cannot reach the gateway: {exc}") from None
        if resp.status_code >= 400:
            body = resp.read()
            self._cm.__exit__(None, None, None)
            _raise_for(resp, body)
        return ChatStream(resp)

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self._cm.__exit__(et, ev, tb)


class AsyncClient:
    def __init__(self, base_url: str = "http://127.0.0.1:8080", api_key: str | None = None, timeout: float = 300.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(base_url=_base(base_url), headers=headers, timeout=timeout)

    async def _send(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            resp = await self._http.request(method, path, **kw)
        except httpx.TransportError as exc:
            raise APIConnectionError(f"cannot reach the gateway: {exc}") from None
        _raise_for(resp, resp.content)
        return resp

    async def chat(
        self, messages: Messages, model: str = "hybridgate/auto", *, privacy: str | None = None, deadline_ms: float | None = None, **params: Any
    ) -> ChatResult:
        resp = await self._send(
            "POST", "/v1/chat/completions", json=_payload(messages, model, False, params), headers=_hints(privacy, deadline_ms)
        )
        return _result(resp, resp.json())

    async def route(
        self, messages: Messages, model: str = "hybridgate/auto", *, privacy: str | None = None, deadline_ms: float | None = None
    ) -> Decision:
        resp = await self._send("POST", "/v1/route", json=_payload(messages, model, False, {}), headers=_hints(privacy, deadline_ms))
        return Decision.from_json(resp.json())

    def stream(
        self, messages: Messages, model: str = "hybridgate/auto", *, privacy: str | None = None, deadline_ms: float | None = None, **params: Any
    ) -> _AsyncStreamContext:
        """Use as ``async with client.stream(...) as s: async for piece in s: ...``."""
        return _AsyncStreamContext(self._http, _payload(messages, model, True, params), _hints(privacy, deadline_ms))

    async def models(self) -> list[str]:
        return [m["id"] for m in (await self._send("GET", "/v1/models")).json()["data"]]

    async def feedback(self, response_id: str, rating: str | float) -> dict[str, Any]:
        return dict((await self._send("POST", "/v1/feedback", json={"id": response_id, "rating": rating})).json())

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class _AsyncStreamContext:
    def __init__(self, http: httpx.AsyncClient, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self._http, self._body, self._headers = http, body, headers or {}
        self._cm: Any = None

    async def __aenter__(self) -> AsyncChatStream:
        try:
            self._cm = self._http.stream("POST", "/v1/chat/completions", json=self._body, headers=self._headers)
            resp = await self._cm.__aenter__()
        except httpx.TransportError as exc:
            raise APIConnectionError(f"cannot reach the gateway: {exc}") from None
        if resp.status_code >= 400:
            body = await resp.aread()
            await self._cm.__aexit__(None, None, None)
            _raise_for(resp, body)
        return AsyncChatStream(resp)

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        await self._cm.__aexit__(et, ev, tb)


# One name per concept, as on the server (router.Decision, serving.records.Routing); the old names still resolve.
_DEPRECATED = {"RouteDecision": "Decision", "RoutingInfo": "Routing"}


def __getattr__(name: str) -> Any:
    if name in _DEPRECATED:
        import warnings

        new = _DEPRECATED[name]
        warnings.warn(f"hybridgate.client.{name} is deprecated: use {new}", DeprecationWarning, stacklevel=2)
        return globals()[new]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
