"""Any provider litellm knows (OpenAI, Anthropic, Gemini, Bedrock, ...), credentials from the environment."""

from __future__ import annotations

import asyncio
import logging
import threading
import warnings
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

from hybridgate.router import Route
from hybridgate.serving.backends.base import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    ChatParams,
    Completion,
    Delta,
    Health,
    RequestUnsendable,
    UpstreamRejected,
    Usage,
)
from hybridgate.serving.backends.remote_common import api_key, completion_from_choices
from hybridgate.serving.cloud_request import cloud_body, encoded
from hybridgate.serving.config import RemoteConfig

log = logging.getLogger(__name__)
T = TypeVar("T")


_END = object()
_LOOP: asyncio.AbstractEventLoop | None = None
_LOOP_LOCK = threading.Lock()


def _litellm_loop() -> asyncio.AbstractEventLoop:
    """One event loop on a thread of its own for every litellm call. litellm's own work per call grows with the
    request (copying and logging the messages, building the provider's body, reading the answer): on the
    gateway's loop, 2,048 messages to the cloud stalled /healthz. One loop for all litellm backends, so the
    HTTP clients litellm caches are always used on the loop that made them."""
    global _LOOP
    with _LOOP_LOCK:
        if _LOOP is None or _LOOP.is_closed():
            _LOOP = asyncio.new_event_loop()
            threading.Thread(target=_LOOP.run_forever, name="hybridgate-litellm", daemon=True).start()
        return _LOOP


async def _on_litellm_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on litellm's loop and wait for it here; cancelling here cancels it there."""
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, _litellm_loop()))


def _quiet_litellm() -> Any:
    import litellm

    # No phoning home, no per-request debug banners: the gateway keeps its own logs and metrics.
    litellm.telemetry = False
    litellm.suppress_debug_info = True
    litellm.drop_params = True
    litellm.turn_off_message_logging = True
    logging.getLogger("LiteLLM").setLevel(logging.WARNING)
    # litellm dumps its own response objects with fields its pydantic models do not declare: a warning per call
    # that says nothing about the request.
    warnings.filterwarnings("ignore", message="Pydantic serializer warnings", category=UserWarning)
    return litellm


class LitellmBackend:
    def __init__(self, cfg: RemoteConfig) -> None:
        self._litellm = _quiet_litellm()
        self.cfg = cfg
        self.name = cfg.name
        self.route = Route(cfg.route)
        self.model_id = cfg.model
        self.health = Health()
        self._key = api_key(cfg)

    def _kwargs(self, params: ChatParams) -> dict[str, Any]:
        body = cloud_body(params)
        encoded(body, self.name)  # a body that cannot be encoded fails here, never counted as the provider's fault
        kw: dict[str, Any] = {
            "model": self.cfg.model,
            "timeout": self.cfg.timeout_s,
            "num_retries": self.cfg.max_retries,
            **body,  # the allow-list: nothing else leaves
        }
        if self.cfg.api_base:
            kw["api_base"] = self.cfg.api_base
        if self._key:
            kw["api_key"] = self._key
        return kw

    def _translate(self, exc: Exception) -> BackendError:
        """The failure as the gateway's error; only what the provider or the network did (connection, timeout,
        5xx, 429) counts against the circuit breaker, never what a request's own content caused."""
        if isinstance(exc, BackendError):  # already judged (a body that could not be encoded)
            return exc
        ex = self._litellm.exceptions
        msg = f"{self.name}: {type(exc).__name__}: {str(exc)[:300]}"
        if isinstance(exc, UnicodeError) or isinstance(getattr(exc, "__cause__", None), UnicodeError):
            return RequestUnsendable(msg, backend=self.name)
        status = getattr(exc, "status_code", None)
        if isinstance(exc, ex.Timeout):
            err: BackendError = BackendTimeout(msg, backend=self.name)
        elif isinstance(exc, ex.APIConnectionError):
            err = BackendUnavailable(msg, backend=self.name)
        elif isinstance(exc, (ex.BadRequestError, ex.UnprocessableEntityError)) and not isinstance(
            exc, ex.AuthenticationError
        ):
            return UpstreamRejected(msg, backend=self.name)
        else:
            err = BackendError(msg, backend=self.name)
            if not isinstance(status, int) or not (status >= 500 or status in (408, 429)):
                return err  # not the provider failing (a bug, an auth or quota answer): fall back, but keep the breaker shut
        self.health.failed(msg)
        return err

    async def complete(self, params: ChatParams) -> Completion:
        async def call() -> Any:
            resp = await self._litellm.acompletion(**self._kwargs(params))
            usage = getattr(resp, "usage", None)
            choices = [c.model_dump(warnings=False) if hasattr(c, "model_dump") else dict(c) for c in resp.choices]
            return choices, Usage(getattr(usage, "prompt_tokens", 0) or 0, getattr(usage, "completion_tokens", 0) or 0), resp.model

        try:
            choices, usage, model = await _on_litellm_loop(call())
        except Exception as exc:
            raise self._translate(exc) from None
        self.health.ok()
        return completion_from_choices(choices, usage, model or self.model_id)

    async def stream(self, params: ChatParams) -> AsyncIterator[Delta]:
        here = asyncio.get_running_loop()
        pieces: asyncio.Queue[Any] = asyncio.Queue()

        def put(item: Any) -> None:
            here.call_soon_threadsafe(pieces.put_nowait, item)

        async def pump() -> None:  # on litellm's loop: the call, and turning each chunk into a Delta
            finish: str | None = None
            usage: Usage | None = None
            try:
                resp = await self._litellm.acompletion(**self._kwargs(params), stream=True, stream_options={"include_usage": True})
                async for chunk in resp:
                    u = getattr(chunk, "usage", None)
                    if u is not None and getattr(u, "completion_tokens", None):
                        usage = Usage(u.prompt_tokens or 0, u.completion_tokens or 0)
                    for choice in chunk.choices or []:
                        text = getattr(choice.delta, "content", None)
                        calls = getattr(choice.delta, "tool_calls", None)
                        if text or calls:
                            wire = [c.model_dump(exclude_none=True, warnings=False) if hasattr(c, "model_dump") else dict(c) for c in calls or []]
                            put(Delta(text=text or "", tool_calls=wire or None))
                        finish = choice.finish_reason or finish
                put(Delta(finish_reason=finish or "stop", usage=usage))
            except Exception as exc:  # handed over, raised on the gateway's loop
                put(exc)
            finally:
                put(_END)

        running = asyncio.run_coroutine_threadsafe(pump(), _litellm_loop())
        try:
            while (item := await pieces.get()) is not _END:
                if isinstance(item, Exception):
                    raise self._translate(item)
                if item.finish_reason:
                    self.health.ok()
                yield item
        finally:
            running.cancel()

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "route": self.route.value,
            "kind": "litellm",
            "model": self.cfg.model,
            "api_base": self.cfg.api_base,
            **self.health.as_dict(),
        }

    async def aclose(self) -> None:
        return None
