"""Both remote transports carry every cloud feature the same way, and ``auto`` picks the native one for
every provider that speaks OpenAI's wire (the lean path a user gets without configuring anything).

The cloud is the loopback stub, which records each body it was sent."""

from __future__ import annotations

import json
from collections.abc import Callable

import jsonschema
import openai
import pytest

from hybridgate.serving.backends.providers import OPENAI_WIRE, resolve_wire
from tests.conftest import ServerThread, post_chat
from tests.test_tools_structured import PERSON, WEATHER

TRANSPORTS = ["openai", "litellm"]


@pytest.mark.parametrize(
    ("model", "api_base", "transport", "provider", "base", "wire_model"),
    [
        ("openai/gpt-4o-mini", None, "openai", "openai", "https://api.openai.com/v1", "gpt-4o-mini"),
        ("groq/llama-3.1-8b-instant", None, "openai", "groq", "https://api.groq.com/openai/v1", "llama-3.1-8b-instant"),
        ("together_ai/meta-llama/Llama-3-8b", None, "openai", "together", "https://api.together.xyz/v1", "meta-llama/Llama-3-8b"),
        ("fireworks_ai/accounts/fireworks/models/x", None, "openai", "fireworks", "https://api.fireworks.ai/inference/v1", "accounts/fireworks/models/x"),
        ("deepseek/deepseek-chat", None, "openai", "deepseek", "https://api.deepseek.com/v1", "deepseek-chat"),
        ("mistral/mistral-small-latest", None, "openai", "mistral", "https://api.mistral.ai/v1", "mistral-small-latest"),
        ("openrouter/anthropic/claude-3.5-haiku", None, "openai", "openrouter", "https://openrouter.ai/api/v1", "anthropic/claude-3.5-haiku"),
        ("azure/my-deployment", "https://res.openai.azure.com", "openai", "azure", "https://res.openai.azure.com/openai/v1", "my-deployment"),
        ("ollama/llama3.2", "http://127.0.0.1:11434", "openai", "ollama", "http://127.0.0.1:11434/v1", "llama3.2"),
        ("ollama_chat/llama3.2", None, "openai", "ollama", "http://localhost:11434/v1", "llama3.2"),
        ("hosted_vllm/qwen", "http://10.0.0.2:8000/v1", "openai", "vllm", "http://10.0.0.2:8000/v1", "qwen"),
        ("llamacpp/any", "http://edge:8080/v1", "openai", "llama.cpp", "http://edge:8080/v1", "any"),
        ("my-model", "http://127.0.0.1:9/v1", "openai", "openai-compatible", "http://127.0.0.1:9/v1", "my-model"),
        ("anthropic/claude-3-5-haiku-latest", None, "litellm", "anthropic", None, "anthropic/claude-3-5-haiku-latest"),
        ("bedrock/anthropic.claude-v2", None, "litellm", "bedrock", None, "bedrock/anthropic.claude-v2"),
        ("vertex_ai/gemini-1.5-pro", None, "litellm", "vertex_ai", None, "vertex_ai/gemini-1.5-pro"),
        ("gpt-4o", None, "litellm", "litellm", None, "gpt-4o"),  # a bare name without a server: litellm guesses
    ],
)
def test_auto_sends_openai_wire_providers_native_and_the_rest_through_litellm(
    model: str, api_base: str | None, transport: str, provider: str, base: str | None, wire_model: str
) -> None:
    wire = resolve_wire(model, api_base, "auto")
    assert (wire.transport, wire.provider, wire.api_base, wire.model) == (transport, provider, base, wire_model)


def test_every_openai_wire_provider_resolves_native_with_its_key_variable() -> None:
    for p in OPENAI_WIRE:
        base = p.api_base or "http://127.0.0.1:1/v1"
        wire = resolve_wire(f"{p.prefixes[0]}/m", None if p.api_base else base, "auto")
        assert wire.transport == "openai" and wire.provider == p.name and wire.key_env == p.key_env
        assert resolve_wire(f"{p.prefixes[0]}/m", base, "litellm").transport == "litellm", "config can force litellm"


def test_a_self_hosted_wire_without_an_address_is_one_readable_error() -> None:
    with pytest.raises(ValueError, match="set api_base"):
        resolve_wire("hosted_vllm/qwen", None, "auto")
    with pytest.raises(ValueError, match="unknown transport"):
        resolve_wire("openai/x", None, "pigeon")


def test_the_configured_key_variable_wins_over_the_providers(monkeypatch: pytest.MonkeyPatch) -> None:
    from hybridgate.serving.backends.remote_common import api_key
    from hybridgate.serving.config import RemoteConfig

    monkeypatch.setenv("GROQ_API_KEY", "from-provider-var")
    monkeypatch.setenv("MY_KEY", "from-config")
    cfg = RemoteConfig(name="c", model="groq/x")
    assert api_key(cfg) == "from-provider-var"
    assert api_key(RemoteConfig(name="c", model="groq/x", api_key_env="MY_KEY")) == "from-config"
    assert api_key(RemoteConfig(name="c", model="groq/x", api_key_env="UNSET_VAR")) is None


def test_the_default_configuration_gets_the_native_transport(make_gateway: Callable[..., ServerThread], stub) -> None:
    srv = make_gateway()  # the tests' config names no transport: what a user who configures nothing gets
    assert srv.gateway.backends["cloud"].describe()["kind"] == "openai"  # type: ignore[attr-defined]


def _client(srv: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{srv.url}/v1", api_key="none", max_retries=0)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_tools_structured_output_choices_and_usage_on_both_transports(
    make_gateway: Callable[..., ServerThread], stub, transport: str
) -> None:
    srv = make_gateway(cloud={"transport": transport})
    assert srv.gateway.backends["cloud"].describe()["kind"] == transport  # type: ignore[attr-defined]
    c, received = _client(srv), stub[1].received
    msgs = [{"role": "user", "content": "Weather in Oslo?"}]
    out = c.chat.completions.create(model="hybridgate/cloud", messages=msgs, tools=[WEATHER], tool_choice="auto")
    call = out.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "stub", "unit": "celsius"}
    assert received[-1]["tools"] == [WEATHER] and received[-1]["tool_choice"] == "auto"
    assert out.usage is not None and out.usage.completion_tokens > 0
    pieces = list(c.chat.completions.create(model="hybridgate/cloud", messages=msgs, tools=[WEATHER], stream=True))
    calls = [tc for p in pieces for ch in p.choices for tc in (ch.delta.tool_calls or [])]
    assert json.loads("".join(tc.function.arguments or "" for tc in calls)) == {"city": "stub", "unit": "celsius"}
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
    person = c.chat.completions.create(model="hybridgate/cloud", messages=msgs, response_format=fmt)
    jsonschema.validate(json.loads(person.choices[0].message.content), PERSON)
    assert received[-1]["response_format"] == fmt
    three = c.chat.completions.create(model="hybridgate/cloud", messages=msgs, n=3, max_tokens=6)
    assert len(three.choices) == 3 and received[-1]["n"] == 3
    text = "".join(p.choices[0].delta.content or "" for p in c.chat.completions.create(model="hybridgate/cloud", messages=msgs, stream=True) if p.choices)
    assert text == stub[1].reply


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_provider_refusal_is_the_clients_400_on_both_transports(make_gateway: Callable[..., ServerThread], stub, transport: str) -> None:
    srv = make_gateway(cloud={"transport": transport, "fallback_to_local": False})
    stub[1].mode = "reject"
    try:
        r = post_chat(srv.url, {"model": "hybridgate/cloud", "messages": [{"role": "user", "content": "hi"}]})
    finally:
        stub[1].mode = "ok"
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["message"].count("\n") == 0 and "cloud" in err["message"], "one readable line naming the backend"


@pytest.mark.parametrize(
    "model", ["openai/gpt-4o-mini", "gpt-4o-mini", "anthropic/claude-3-5-haiku-latest", "groq/llama-3.1-8b-instant", "openai/stub"]
)
def test_list_prices_read_without_litellm_match_litellms_own(model: str) -> None:
    """The native path reads litellm's price file as data instead of importing litellm; the figures must be the same."""
    import litellm

    from hybridgate.serving.backends.pricing import list_price_per_1k

    try:
        expected: tuple[float, float] | None = tuple(litellm.cost_per_token(model=model, prompt_tokens=1000, completion_tokens=1000))  # type: ignore[assignment]
    except Exception:  # litellm raises for a model it has no price for
        expected = None
    got = list_price_per_1k(model)
    assert (got is None) == (expected is None)
    if got is not None and expected is not None:
        assert got == pytest.approx(expected, rel=1e-9)


def test_azure_key_goes_in_its_api_key_header_for_calls_and_probes(
    make_gateway: Callable[..., ServerThread], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Azure OpenAI takes the key as ``api-key``, not as a bearer token: the chat call and the node's health
    probe both send it there (the probe sent ``Authorization: Bearer`` before, which Azure refuses)."""
    import asyncio

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    seen: list[tuple[str, str, dict[str, str]]] = []

    async def record(request: Request) -> JSONResponse:
        seen.append((request.method, request.url.path, dict(request.headers)))
        if request.method == "GET":
            return JSONResponse({"object": "list", "data": []})
        return JSONResponse(
            {"id": "x", "object": "chat.completion", "model": "dep", "usage": {"prompt_tokens": 3, "completion_tokens": 1},
             "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]}
        )

    app = Starlette(routes=[Route("/{path:path}", record, methods=["GET", "POST"])])
    monkeypatch.setenv("HG_TEST_AZURE_KEY", "azure-secret")
    with ServerThread(app) as azure:
        gw = make_gateway(cloud={"model": "azure/dep", "api_base": azure.url, "api_key_env": "HG_TEST_AZURE_KEY"})
        r = post_chat(gw.url, {"model": "hybridgate/cloud", "messages": [{"role": "user", "content": "hello"}]})
        assert r.status_code == 200, r.text
        gateway = gw.gateway  # type: ignore[attr-defined]
        asyncio.run_coroutine_threadsafe(gateway.monitor.check_once(), gateway.loop).result(timeout=30)
    calls = [h for method, path, h in seen if method == "POST" and path == "/openai/v1/chat/completions"]
    probes = [h for method, path, h in seen if method == "GET" and path.endswith("/models")]
    assert calls and probes, seen
    for headers in calls + probes:
        assert headers.get("api-key") == "azure-secret"
        assert "authorization" not in headers
