"""A native client for servers that already speak OpenAI's wire format.

OpenAI itself and every provider that takes its body (see :mod:`providers`),
a llama.cpp server on an edge box, vLLM, another hybridgate: for these the
gateway forwards JSON over a pool of kept-alive aiohttp connections, which
costs a fraction of a translation layer's time per request. Every other
provider goes through :mod:`remote_litellm`.

The client was chosen by measurement (``bench/gateway_overhead.py``'s notes in
docs/benchmarks.md): against the same loopback stub, aiohttp spent about a fifth
of httpx's CPU per call (0.2 against 1.0-1.3 ms at one call in flight).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from hybridgate.router import Route
from hybridgate.serving.backends.base import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    ChatParams,
    Completion,
    Delta,
    Health,
    UpstreamRejected,
    Usage,
)
from hybridgate.serving.backends.providers import Wire, key_headers, resolve_wire
from hybridgate.serving.backends.remote_common import api_key, completion_from_choices
from hybridgate.serving.cloud_request import cloud_body, encoded, is_small
from hybridgate.serving.config import RemoteConfig

_TIMEOUTS = (asyncio.TimeoutError, aiohttp.ServerTimeoutError)


class OpenAIHTTPBackend:
    def __init__(self, cfg: RemoteConfig, wire: Wire | None = None) -> None:
        wire = wire or resolve_wire(cfg.model, cfg.api_base, "openai", cfg.api_key_env)
        assert wire.api_base is not None  # resolve_wire refuses a native wire without one
        self.cfg = cfg
        self.wire = wire
        self.name = cfg.name
        self.route = Route(cfg.route)
        self.model_id = wire.model
        self.health = Health()
        key = api_key(cfg)
        self._headers = {"Content-Type": "application/json", **key_headers(wire.auth_header, key)}
        self._url = URL(wire.api_base.rstrip("/") + "/chat/completions")
        # Like httpx before it, the client honours HTTP(S)_PROXY and NO_PROXY; read once here, not per call.
        try:
            self._proxy, self._proxy_auth = get_env_proxy_for_url(self._url)
        except LookupError:
            self._proxy, self._proxy_auth = None, None
        # Limits like httpx's were: each read may wait timeout_s (a stream may run longer in all), a connection
        # takes at most 5 s to open, and a call waits at most timeout_s for a free one from the pool.
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=cfg.timeout_s, sock_connect=min(5.0, cfg.timeout_s), sock_read=cfg.timeout_s
        )
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _client(self) -> aiohttp.ClientSession:
        """The pooled session of the running event loop (made on first use: a session belongs to one loop)."""
        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop or self._session.closed:
            connector = aiohttp.TCPConnector(limit=256, limit_per_host=0, keepalive_timeout=30.0)
            self._session = aiohttp.ClientSession(
                connector=connector, headers=self._headers, timeout=self._timeout
            )
            self._loop = loop
        return self._session

    def _body(self, params: ChatParams, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model_id, **cloud_body(params)}  # the allow-list: nothing else leaves
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    def _fail(self, exc: BackendError) -> BackendError:
        self.health.failed(str(exc))
        return exc

    def _check(self, status: int, text: str) -> None:
        if status < 400:
            return
        detail = text[:300]
        if status in (408, 429) or status >= 500:
            raise BackendError(f"{self.name} answered HTTP {status}: {detail}", backend=self.name)
        raise UpstreamRejected(f"{self.name} rejected the request (HTTP {status}): {detail}", backend=self.name)

    async def _send(self, params: ChatParams, stream: bool) -> aiohttp.ClientResponse:
        # Encoding grows with the request (2,048 messages, a megabyte of text): off the event loop, unless the
        # request is small (cloud_request.is_small), where the thread hop would cost more than the encoding. A
        # body that cannot be encoded fails here, as the request's fault, never counted against the node.
        body = self._body(params, stream)
        content = encoded(body, self.name) if is_small(params) else await asyncio.to_thread(encoded, body, self.name)
        client = self._client()
        last: BackendError | None = None
        for _ in range(self.cfg.max_retries + 1):
            try:
                resp = await client.post(self._url, data=content, proxy=self._proxy, proxy_auth=self._proxy_auth)
            except _TIMEOUTS as exc:
                last = BackendTimeout(f"{self.name} timed out: {type(exc).__name__}", backend=self.name)
                continue
            except aiohttp.ClientError as exc:
                last = BackendUnavailable(f"{self.name} unreachable: {type(exc).__name__}: {exc!s}", backend=self.name)
                continue
            if resp.status < 400:
                return resp
            try:
                text = (await resp.read()).decode("utf-8", errors="replace")
            except (aiohttp.ClientError, *_TIMEOUTS):
                text = ""
            finally:
                resp.release()
            try:
                self._check(resp.status, text)
            except UpstreamRejected:
                raise
            except BackendError as exc:
                last = exc
        assert last is not None
        raise self._fail(last)

    async def complete(self, params: ChatParams) -> Completion:
        resp = await self._send(params, stream=False)
        try:
            raw = await resp.read()
        except _TIMEOUTS:
            raise self._fail(BackendTimeout(f"{self.name} timed out reading the answer", backend=self.name)) from None
        except aiohttp.ClientError as exc:
            raise self._fail(BackendError(f"{self.name} broke off the answer: {exc!s}", backend=self.name)) from None
        finally:
            resp.release()
        try:
            data = json.loads(raw)
            usage = data.get("usage") or {}
            out = completion_from_choices(
                data["choices"],
                Usage(int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))),
                data.get("model", self.model_id),
            )
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise self._fail(BackendError(f"{self.name} sent a malformed answer: {exc!r}", backend=self.name)) from None
        self.health.ok()
        return out

    @staticmethod
    async def _lines(resp: aiohttp.ClientResponse) -> AsyncIterator[str]:
        """The body's lines, whatever their length (aiohttp's own line reader refuses lines over 128 KB, and a
        tool call's arguments may come in one event of any size)."""
        buf = b""
        async for piece in resp.content.iter_any():
            buf += piece
            if b"\n" not in piece:
                continue
            *lines, buf = buf.split(b"\n")
            for line in lines:
                yield line.rstrip(b"\r").decode("utf-8")
        if buf:
            yield buf.rstrip(b"\r").decode("utf-8")

    async def stream(self, params: ChatParams) -> AsyncIterator[Delta]:
        resp = await self._send(params, stream=True)
        finish: str | None = None
        usage: Usage | None = None
        done = False
        try:
            async for line in self._lines(resp):
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    done = True
                    break
                chunk = json.loads(payload)
                if "error" in chunk:
                    raise BackendError(f"{self.name} failed mid-stream: {chunk['error']}", backend=self.name)
                if chunk.get("usage"):
                    u = chunk["usage"]
                    usage = Usage(int(u.get("prompt_tokens", 0)), int(u.get("completion_tokens", 0)))
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    if delta.get("content") or delta.get("tool_calls"):
                        yield Delta(text=delta.get("content") or "", tool_calls=delta.get("tool_calls") or None)
                    finish = choice.get("finish_reason") or finish
            else:
                done = True
        except _TIMEOUTS:
            raise self._fail(BackendTimeout(f"{self.name} timed out mid-stream", backend=self.name)) from None
        except (aiohttp.ClientError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise self._fail(BackendError(f"{self.name} broke off mid-stream: {exc!s}", backend=self.name)) from None
        finally:
            if done:
                resp.release()  # the body was read to its end: the connection goes back to the pool
            else:
                resp.close()  # abandoned half-way: the rest of the body must not be read by the next call
        self.health.ok()
        yield Delta(finish_reason=finish or "stop", usage=usage)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "route": self.route.value,
            "kind": "openai",
            "provider": self.wire.provider,
            "model": self.cfg.model,
            "api_base": self.wire.api_base,
            **self.health.as_dict(),
        }

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            if self._loop is asyncio.get_running_loop():
                await self._session.close()
            self._session = None
