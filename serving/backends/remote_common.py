"""Pieces both remote transports share: the request body and the API key."""

from __future__ import annotations

import hashlib
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
        "user": None if params.user is None else pseudonym(params.user),
    }
    return {k: v for k, v in fields.items() if v is not None}


def pseudonym(user: str) -> str:
    """The OpenAI ``user`` field as a stable digest: a provider can still tell one end user from another (what
    the field is for), but an e-mail address or a name used as the id never leaves the device."""
    return "hg-" + hashlib.sha256(user.encode("utf-8", "surrogatepass")).hexdigest()[:32]
