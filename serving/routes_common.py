"""What the OpenAI routes and the operator's routes share: the gateway of a request, loopback, error docs."""

from __future__ import annotations

import ipaddress
from typing import Any

from fastapi import Request

from hybridgate.serving.gateway import Gateway
from hybridgate.serving.schemas import ErrorResponse


async def gateway_of(request: Request) -> Gateway:  # a coroutine: FastAPI would run a plain function in a thread
    return request.app.state.gateway  # type: ignore[no-any-return]


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


# Why each status can come back, as the schema tells it (the same words on every operation that answers it).
_WHY = {
    400: "malformed JSON, an unsupported field or value, a bad header or parameter, a prompt the local model cannot hold (context_length_exceeded), an answer expected to use more energy than the key's cap (energy_cap_exceeded)",
    401: "a key is configured and none, or a wrong one, was sent",
    403: "privacy forbids the cloud for this request, or the endpoint needs an admin key",
    404: "unknown model, or no answer with this id awaits a rating",
    413: "the body is over server.max_body_bytes",
    422: "the body does not match the schema",
    429: "this key's daily cloud budget (budget_exhausted) or energy budget (energy_budget_exhausted) is spent",
    502: "the backend failed and no fallback was allowed",
    503: "the local queue is full or no backend is healthy (Retry-After says when to come back)",
    504: "the backend timed out and no fallback was allowed",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The error statuses an endpoint answers, each in OpenAI's shape: so the schema says what the API does."""
    return {code: {"model": ErrorResponse, "description": _WHY[code]} for code in statuses}
