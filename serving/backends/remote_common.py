"""Pieces both remote transports share: the API key, the answer's choices, the user pseudonym (the request
body is :mod:`hybridgate.serving.cloud_request`'s)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from typing import Any

from hybridgate.serving.backends.base import Completion, Usage
from hybridgate.serving.backends.providers import provider_key_env
from hybridgate.serving.config import RemoteConfig


def api_key(cfg: RemoteConfig) -> str | None:
    """The key named by ``api_key_env`` (else the provider's usual variable); a keyless OpenAI-compatible server
    gets a placeholder. One answer for the transports and the health probes alike."""
    env = cfg.api_key_env or provider_key_env(cfg.model)
    if env and os.environ.get(env):
        return os.environ[env]
    if cfg.api_key_env:
        return None
    return "no-key" if cfg.api_base else None


def completion_from_choices(choices: list[dict[str, Any]], usage: Usage, model: str) -> Completion:
    """An OpenAI ``choices`` list (dicts) as one Completion: the first choice, the others as alternatives."""
    parsed = [
        Completion(
            text=(c.get("message") or {}).get("content") or "",
            finish_reason=c.get("finish_reason") or "stop",
            usage=usage,
            model=model,
            tool_calls=[wire_tool_call(t) for t in (c.get("message") or {}).get("tool_calls") or []] or None,
            logprobs=c.get("logprobs") or None,
        )
        for c in sorted(choices, key=lambda c: int(c.get("index", 0)))
    ]
    if not parsed:
        raise KeyError("choices")
    return replace(parsed[0], alternatives=tuple(parsed[1:]))


def pseudonym(user: str) -> str:
    """The OpenAI ``user`` field as a stable digest: a provider can still tell one end user from another (what
    the field is for), but an e-mail address or a name used as the id never leaves the device."""
    return "hg-" + hashlib.sha256(user.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def wire_tool_call(call: dict[str, Any]) -> dict[str, Any]:
    """A tool call as OpenAI writes it, whatever extra fields a provider's client library added."""
    fn = call.get("function") or {}
    return {"id": call.get("id") or "", "type": "function", "function": {"name": fn.get("name") or "", "arguments": fn.get("arguments") or "{}"}}
