"""A native client for servers that already speak OpenAI's wire format.

OpenAI itself and every provider that takes its body (see :mod:`providers`),
a llama.cpp server on an edge box, vLLM, another hybridgate: for these the
gateway forwards JSON over one pooled httpx connection, which costs a
fraction of a translation layer's time per request. Every other provider
goes through :mod:`remote_litellm`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

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
from hybridgate.serving.backends.providers import Wire, resolve_wire
from hybridgate.serving.backends.remote_common import api_key, completion_from_choices
from hybridgate.serving.cloud_request import cloud_body, encoded
from hybridgate.serving.config import RemoteConfig


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
        headers = {}
        if key:
            headers[wire.auth_header] = key if wire.auth_header != "Authorization" else f"Bearer {key}"
        self._client = httpx.AsyncClient(
            base_url=wire.api_base.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(cfg.timeout_s, connect=min(5.0, cfg.timeout_s)),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
        )

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

    async def _send(self, body: dict[str, Any], stream: bool) -> httpx.Response:
        # Encoding grows with the request (2,048 messages, a megabyte of text): off the event loop. A body that
        # cannot be encoded fails here, as the request's fault, never counted against the node.
        content = await asyncio.to_thread(encoded, body, self.name)
        last: BackendError | None = None
        for _ in range(self.cfg.max_retries + 1):
            try:
                req = self._client.build_request("POST", "/chat/completions", content=content, headers={"Content-Type": "application/json"})
                resp = await self._client.send(req, stream=stream)
            except httpx.TimeoutException as exc:
                last = BackendTimeout(f"{self.name} timed out: {type(exc).__name__}", backend=self.name)
                continue
            except httpx.TransportError as exc:
                last = BackendUnavailable(f"{self.name} unreachable: {exc!s}", backend=self.name)
                continue
            if resp.status_code < 400:
                return resp
            text = (await resp.aread()).decode("utf-8", errors="replace")
            await resp.aclose()
            try:
                self._check(resp.status_code, text)
            except UpstreamRejected:
                raise
            except BackendError as exc:
                last = exc
        assert last is not None
        raise self._fail(last)

    async def complete(self, params: ChatParams) -> Completion:
        resp = await self._send(self._body(params, stream=False), stream=False)
        try:
            data = resp.json()
            usage = data.get("usage") or {}
            out = completion_from_choices(
                data["choices"],
                Usage(int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))),
                data.get("model", self.model_id),
            )
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise self._fail(BackendError(f"{self.name} sent a malformed answer: {exc!r}", backend=self.name)) from None
        self.health.ok()
        return out

    async def stream(self, params: ChatParams) -> AsyncIterator[Delta]:
        resp = await self._send(self._body(params, stream=True), stream=True)
        finish: str | None = None
        usage: Usage | None = None
        try:
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
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
        except httpx.TimeoutException:
            raise self._fail(BackendTimeout(f"{self.name} timed out mid-stream", backend=self.name)) from None
        except (httpx.TransportError, json.JSONDecodeError) as exc:
            raise self._fail(BackendError(f"{self.name} broke off mid-stream: {exc!s}", backend=self.name)) from None
        finally:
            await resp.aclose()
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
        await self._client.aclose()
