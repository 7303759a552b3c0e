"""Faults belong to whoever caused them (issue 23, finding 5).

A lone surrogate nested deeper than the old 32-level scan passed validation, failed inside the cloud
client, fell back to local with 200, and counted against the shared circuit breaker: four such requests
closed the cloud for every other key for 15 s. Now the body is refused at validation (422, OpenAI's
shape), a body that still cannot be encoded is a 400 for that request, and a breaker counts only what
the provider or the network did (connection, timeout, 5xx, 429).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from hybridgate.serving.backends.base import BackendError, ChatParams
from hybridgate.serving.config import RemoteConfig
from tests.conftest import ServerThread, post_chat

LONE = "\ud800"


def nested(depth: int, leaf: Any) -> Any:
    for _ in range(depth):
        leaf = {"type": "object", "properties": {"x": leaf}}
    return leaf


def malformed_bodies() -> list[dict[str, Any]]:
    """Lone surrogates anywhere: deep in a tool's parameters, deep in a response_format schema, in a key."""
    tool = {"type": "function", "function": {"name": "f", "parameters": nested(40, {"description": LONE})}}
    schema = nested(40, {"const": "a" + LONE})
    return [
        {"model": "hybridgate/cloud", "messages": [{"role": "user", "content": "hi"}], "tools": [tool]},
        {"model": "hybridgate/cloud", "messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}},
        {"model": "hybridgate/cloud", "messages": [{"role": "user", "content": "hi"}], "tools": [{**tool, "function": {"name": "f", "parameters": nested(50, {LONE: {}})}}]},
        {"model": "hybridgate/cloud", "messages": [{"role": "user", "content": "hi"}], "stop": ["x" + LONE]},
    ]


def send_raw(url: str, body: dict[str, Any], key: str) -> httpx.Response:
    # json.dumps escapes the surrogate (\ud800): valid JSON, which is what an attacker sends.
    return httpx.post(f"{url}/v1/chat/completions", content=json.dumps(body), timeout=60,
                      headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})


@pytest.mark.parametrize("transport", ["litellm", "openai"])
def test_one_key_flooding_malformed_requests_cannot_close_the_cloud_for_another(
    make_gateway: Callable[..., ServerThread], stub, transport: str
) -> None:
    srv = make_gateway(server={"api_keys": ["bad", "good"]}, cloud={"transport": transport})
    cloud = srv.gateway.backends["cloud"]  # type: ignore[attr-defined]
    bad: list[httpx.Response] = []
    good: list[httpx.Response] = []

    def flood() -> None:
        for _ in range(3):
            for body in malformed_bodies():
                bad.append(send_raw(srv.url, body, "bad"))

    def pinned() -> None:
        for _ in range(6):
            good.append(post_chat(srv.url, {"model": "hybridgate/cloud", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4},
                                  headers={"Authorization": "Bearer good"}))

    workers = [threading.Thread(target=flood) for _ in range(4)] + [threading.Thread(target=pinned)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert bad and all(400 <= r.status_code < 500 for r in bad), sorted({r.status_code for r in bad})
    assert all(r.json()["error"]["message"] and "surrogate" in r.json()["error"]["message"] for r in bad)
    assert [r.status_code for r in good] == [200] * 6 and all(r.headers["x-hybridgate-route"] == "cloud" for r in good)
    assert cloud.health.consecutive_failures == 0 and cloud.health.healthy


@pytest.mark.parametrize("transport", ["litellm", "openai"])
async def test_a_body_that_cannot_be_encoded_is_the_requests_fault_not_the_backends(stub, transport: str) -> None:
    """Behind validation, in depth: a body no encoding holds fails before the call, as a 400 that never counts
    against the breaker; a provider's 500 still does."""
    from hybridgate.serving.app import to_api_error
    from hybridgate.serving.backends.base import RequestUnsendable
    from hybridgate.serving.build import build_remote

    url, behaviour = stub
    backend = build_remote(RemoteConfig(name="cloud", model="openai/stub-large", api_base=f"{url}/v1", transport=transport, timeout_s=5, max_retries=0))
    try:
        params = ChatParams(messages=[{"role": "user", "content": "hi"}], tools=[{"type": "function", "function": {"name": "f", "parameters": nested(60, {"description": LONE})}}])
        for _ in range(backend.health.trip_after + 1):
            with pytest.raises(RequestUnsendable) as caught:
                await backend.complete(params)
            assert to_api_error(caught.value).status == 400
        assert backend.health.consecutive_failures == 0 and backend.health.healthy
        behaviour.mode = "error500"
        with pytest.raises(BackendError):
            await backend.complete(ChatParams(messages=[{"role": "user", "content": "hi"}]))
        assert backend.health.consecutive_failures == 1
    finally:
        await backend.aclose()
