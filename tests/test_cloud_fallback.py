"""The cloud route over both transports, its failures, and the fallback to the local model."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import httpx
import pytest

from hybridgate.serving.backends.remote_common import pseudonym
from tests.conftest import ServerThread, free_port, post_chat

HELLO = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 6}


def break_cloud(stub, failure: str, cloud: dict[str, object]) -> dict[str, object]:
    """Make the stand-in cloud fail one way: HTTP 500, an answer slower than the timeout, or nobody listening."""
    if failure == "refused":
        cloud["api_base"] = f"http://127.0.0.1:{free_port()}/v1"
    else:
        stub[1].mode = "error500" if failure == "error500" else "slow"
        stub[1].delay_s = 3.0 if failure == "timeout" else 0.0
    return cloud


@pytest.mark.parametrize("transport", ["litellm", "openai"])
def test_cloud_streaming_passes_through(make_gateway: Callable[..., ServerThread], stub, transport: str) -> None:
    srv = make_gateway(cloud={"transport": transport})
    with httpx.stream("POST", f"{srv.url}/v1/chat/completions", json={"model": "cloud", "stream": True, "user": "u2", **HELLO}, timeout=30) as r:
        assert r.headers["x-hybridgate-route"] == "cloud"
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    text = "".join(
        (c["delta"].get("content") or "") for e in events[:-1] for c in json.loads(e).get("choices", [])
    )
    assert text == stub[1].reply
    assert stub[1].received[-1]["stream"] is True
    if transport == "openai":  # litellm 1.106 drops `user` on its own; the native transport forwards it
        # The end-user id reaches the provider as a stable pseudonym, never as given (it may be an e-mail address).
        assert stub[1].received[-1]["user"] == pseudonym("u2") != "u2" and pseudonym("u2").startswith("hg-")


@pytest.mark.parametrize("transport", ["litellm", "openai"])
@pytest.mark.parametrize("failure", ["error500", "refused", "timeout"])
def test_cloud_failure_falls_back_to_local(make_gateway: Callable[..., ServerThread], stub, transport: str, failure: str) -> None:
    srv = make_gateway(cloud=break_cloud(stub, failure, {"transport": transport, "timeout_s": 1.0}))
    r = post_chat(srv.url, {"model": "hybridgate/cloud", **HELLO})
    assert r.status_code == 200, r.text
    assert r.headers["x-hybridgate-route"] == "local"
    assert r.headers["x-hybridgate-fallback"] == "cloud"
    assert r.json()["hybridgate"]["fallback"]["from"] == "cloud"
    assert r.json()["choices"][0]["message"]["content"]
    metrics = httpx.get(f"{srv.url}/metrics").text
    assert 'hybridgate_fallbacks_total{from_backend="cloud",to_backend="local"} 1.0' in metrics


@pytest.mark.parametrize("failure,status", [("error500", 502), ("timeout", 504), ("refused", 502)])
def test_cloud_failure_without_fallback_is_502_or_504(
    make_gateway: Callable[..., ServerThread], stub, failure: str, status: int
) -> None:
    srv = make_gateway(cloud=break_cloud(stub, failure, {"fallback_to_local": False, "timeout_s": 1.0, "transport": "litellm"}))
    r = post_chat(srv.url, {"model": "hybridgate/cloud", **HELLO})
    assert r.status_code == status
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "code"} and "Traceback" not in r.text


def test_streaming_falls_back_before_the_first_token(make_gateway: Callable[..., ServerThread], stub) -> None:
    stub[1].mode = "error500"
    srv = make_gateway(cloud={"transport": "openai"})
    with httpx.stream("POST", f"{srv.url}/v1/chat/completions", json={"model": "hybridgate/cloud", "stream": True, **HELLO}, timeout=30) as r:
        assert r.status_code == 200
        assert r.headers["x-hybridgate-fallback"] == "cloud" and r.headers["x-hybridgate-route"] == "local"
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]" and len(lines) > 3


def test_stream_cut_mid_way_ends_with_an_error_event(make_gateway: Callable[..., ServerThread], stub) -> None:
    stub[1].mode = "cut"
    stub[1].reply = "one two three four"
    srv = make_gateway(cloud={"transport": "openai"})
    with httpx.stream("POST", f"{srv.url}/v1/chat/completions", json={"model": "cloud", "stream": True, **HELLO}, timeout=30) as r:
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    assert any('"error"' in line for line in lines)


def test_circuit_opens_after_repeated_failures_and_auto_goes_local(make_gateway: Callable[..., ServerThread], stub) -> None:
    stub[1].mode = "error500"
    srv = make_gateway(cloud={"transport": "openai", "fallback_to_local": False})
    for _ in range(3):
        assert post_chat(srv.url, {"model": "cloud", **HELLO}).status_code == 502
    ready = httpx.get(f"{srv.url}/readyz").json()
    assert ready["backends"]["cloud"]["healthy"] is False
    hard = {"model": "hybridgate/auto", "messages": [{"role": "user", "content": "Prove the theorem step by step. " * 80}], "max_tokens": 4}
    r = post_chat(srv.url, hard)
    assert r.status_code == 200 and r.headers["x-hybridgate-route"] == "local"
    assert any("no healthy cloud backend" in x for x in r.json()["hybridgate"]["decided"]["reasons"])


def test_streams_the_client_drops_are_still_counted(make_gateway, stub) -> None:  # type: ignore[no-untyped-def]
    """A dropped stream cancels the server's generator; its accounting must survive that cancellation."""
    import asyncio

    from hybridgate.serving.state.base import key_id

    srv = make_gateway(server={"api_keys": ["k"]}, cloud={"cost_per_1k_prompt_usd": 1.0, "cost_per_1k_completion_usd": 1.0})
    stub[1].delay_s = 0.0
    body = {"model": "hybridgate/cloud", "stream": True, "max_tokens": 5, **HELLO}
    drops = 20
    for _ in range(drops):
        with httpx.stream("POST", f"{srv.url}/v1/chat/completions", json=body, headers={"Authorization": "Bearer k"}, timeout=30) as r:
            assert r.status_code == 200
            next(r.iter_lines())  # the first event, then the client goes away
    deadline = time.monotonic() + 10
    counted = 0
    while time.monotonic() < deadline:
        counted = asyncio.run(srv.gateway.state.usage_today(key_id("k"))).requests  # type: ignore[attr-defined]
        if counted >= drops:
            break
        time.sleep(0.1)
    assert counted == drops
