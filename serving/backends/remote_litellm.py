"""Any provider litellm knows (OpenAI, Anthropic, Gemini, Bedrock, ...), credentials from the environment."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

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


def _quiet_litellm() -> Any:
    import litellm

    # No phoning home, no per-request debug banners: the gateway keeps its own logs and metrics.
    litellm.telemetry = False
    litellm.suppress_debug_info = True
    litellm.drop_params = True
    litellm.turn_off_message_logging = True
    logging.getLogger("LiteLLM").setLevel(logging.WARNING)
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
        try:
            resp = await self._litellm.acompletion(**self._kwargs(params))
        except Exception as exc:
            raise self._translate(exc) from None
        usage = getattr(resp, "usage", None)
        choices = [c.model_dump() if hasattr(c, "model_dump") else dict(c) for c in resp.choices]
        self.health.ok()
        return completion_from_choices(
            choices,
            Usage(getattr(usage, "prompt_tokens", 0) or 0, getattr(usage, "completion_tokens", 0) or 0),
            resp.model or self.model_id,
        )

    async def stream(self, params: ChatParams) -> AsyncIterator[Delta]:
        finish: str | None = None
        usage: Usage | None = None
        try:
            resp = await self._litellm.acompletion(
                **self._kwargs(params), stream=True, stream_options={"include_usage": True}
            )
            async for chunk in resp:
                u = getattr(chunk, "usage", None)
                if u is not None and getattr(u, "completion_tokens", None):
                    usage = Usage(u.prompt_tokens or 0, u.completion_tokens or 0)
                for choice in chunk.choices or []:
                    text = getattr(choice.delta, "content", None)
                    calls = getattr(choice.delta, "tool_calls", None)
                    if text or calls:
                        wire = [c.model_dump(exclude_none=True) if hasattr(c, "model_dump") else dict(c) for c in calls or []]
                        yield Delta(text=text or "", tool_calls=wire or None)
                    finish = choice.finish_reason or finish
        except BackendError:
            raise
        except Exception as exc:
            raise self._translate(exc) from None
        self.health.ok()
        yield Delta(finish_reason=finish or "stop", usage=usage)

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
