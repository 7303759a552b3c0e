"""Pieces both remote transports share: the request body and the API key."""

from __future__ import annotations

import os
from typing import Any

from hybridgate.serving.backends.base import ChatParams
from hybridgate.serving.config import RemoteConfig


def api_key(cfg: RemoteConfig) -> str | None:
    """The key named by ``api_key_env``; a keyless OpenAI-compatible server gets a placeholder."""
    if cfg.api_key_env:
        return os.environ.get(cfg.api_key_env)
    return "no-key" if cfg.api_base else None


def optional_params(params: ChatParams) -> dict[str, Any]:
    fields = {
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "stop": params.stop,
        "seed": params.seed,
        "presence_penalty": params.presence_penalty,
        "frequency_penalty": params.frequency_penalty,
        "user": params.user,
    }
    return {k: v for k, v in fields.items() if v is not None}
