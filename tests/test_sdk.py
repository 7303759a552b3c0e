"""hybridgate.Client and AsyncClient against a running gateway."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from collections.abc import Callable

import pytest

import hybridgate
from hybridgate import client as sdk
from tests.conftest import ServerThread, free_port

SERVER_PACKAGES = ("fastapi", "starlette", "uvicorn", "llama_cpp", "litellm", "hybridgate.serving", "hybridgate.router")


@pytest.mark.parametrize("statement", ["import hybridgate", "from hybridgate.client import Client, AsyncClient, HybridgateError"])
def test_the_sdk_imports_nothing_of_the_server(statement: str) -> None:
    """An application that only calls a gateway must not pay for (or need) the server's packages: the SDK is
    imported in a fresh interpreter, which then lists what it loaded."""
    code = f"{statement}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    loaded = json.loads(out)
    assert "hybridgate.client" in loaded and "httpx" in loaded  # it did import the SDK
    server = sorted(m for m in loaded if any(m == p or m.startswith(p + ".") for p in SERVER_PACKAGES))
    assert not server, f"{statement!r} loaded server modules: {server}"


def test_the_old_sdk_path_still_works_and_warns() -> None:
    sys.modules.pop("hybridgate.serving.sdk", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from hybridgate.serving import sdk as old
    assert old.Client is hybridgate.Client and old.AuthenticationError is sdk.AuthenticationError
    assert any(issubclass(w.category, DeprecationWarning) and "hybridgate.client" in str(w.message) for w in caught)


def test_chat_and_routing_info(gateway: ServerThread) -> None:
    with hybridgate.Client(gateway.url) as c:
        out = c.chat("What is 2 + 2?", model="hybridgate/local", max_tokens=6, temperature=0)
        assert out.text and out.usage["completion_tokens"] > 0
        assert out.routing.route == "local" and out.routing.backend == "local"
        assert out.routing.reasons and out.routing.request_id.startswith("chatcmpl-hg-")
        auto = c.chat("Hi", max_tokens=3)
        assert auto.routing.score is not None
        assert "hybridgate/auto" in c.models()


def test_stream(gateway: ServerThread) -> None:
    c = hybridgate.Client(f"{gateway.url}/v1")
    with c.stream([{"role": "user", "content": "Name a fruit."}], model="hybridgate/local", max_tokens=8) as s:
        assert s.routing.route == "local", "routing is known before the first piece"
        pieces = list(s)
    assert len(pieces) >= 2 and s.text == "".join(pieces)
    assert s.usage and s.usage["completion_tokens"] >= 1 and s.finish_reason in ("stop", "length")


async def test_async_client(gateway: ServerThread, stub) -> None:
    async with hybridgate.AsyncClient(gateway.url) as c:
        out = await c.chat("hello", model="cloud", max_tokens=4)
        assert out.text == stub[1].reply and out.routing.route == "cloud"
        async with c.stream("hello", model="cloud") as s:
            pieces = [p async for p in s]
        assert "".join(pieces) == stub[1].reply
        assert s.routing.route == "cloud" and s.usage is not None


def test_typed_errors(make_gateway: Callable[..., ServerThread]) -> None:
    srv = make_gateway(server={"api_keys": ["k"]})
    with pytest.raises(sdk.AuthenticationError) as e:
        hybridgate.Client(srv.url).chat("x")
    assert e.value.status == 401 and e.value.code == "missing_api_key"
    c = hybridgate.Client(srv.url, api_key="k")
    with pytest.raises(sdk.NotFoundError):
        c.chat("x", model="nope")
    with pytest.raises(sdk.BadRequestError) as bad:
        c.chat("x", n=9)
    assert bad.value.code == "unsupported_parameter"
    with pytest.raises(sdk.NotFoundError):
        with c.stream("x", model="nope"):
            pass
    with pytest.raises(sdk.APIConnectionError):
        hybridgate.Client(f"http://127.0.0.1:{free_port()}").chat("x")


def test_rate_limit_error_carries_retry_after(make_gateway: Callable[..., ServerThread]) -> None:
    srv = make_gateway(budgets={"default_daily_usd": 0.0})
    with pytest.raises(sdk.RateLimitError) as e:
        hybridgate.Client(srv.url).chat("x", model="hybridgate/cloud")
    assert e.value.retry_after == 3600.0


def test_the_sdk_returns_tool_calls_and_parses_structured_answers(make_gateway: Callable[..., ServerThread], stub) -> None:
    srv = make_gateway(local={"n_ctx": 1024, "default_max_tokens": 48})
    weather = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    with hybridgate.Client(srv.url) as c:
        called = c.chat("Weather in Rome?", model="hybridgate/local", tools=[weather], tool_choice="required", temperature=0, max_tokens=64)
        assert called.finish_reason == "tool_calls" and called.tool_calls[0]["function"]["name"] == "get_weather"
        fmt = {"type": "json_schema", "json_schema": {"name": "p", "schema": {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}}}
        assert isinstance(c.chat("Is water wet?", model="hybridgate/local", response_format=fmt, temperature=0, max_tokens=32).json()["ok"], bool)
