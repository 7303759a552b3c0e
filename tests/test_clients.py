"""The client libraries agents and frameworks are built on, against the gateway as they are: LangChain's
ChatOpenAI, litellm as a client, and the OpenAI SDK. Each reaches the real local model and the loopback
cloud stub (which records what arrived), and each maps the gateway's errors to its own exception classes."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import litellm
import openai
import pytest
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from tests.conftest import ServerThread

Q = "What is the weather in Paris?"


class Person(BaseModel):
    name: str
    age: int


@tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    return f"18 degrees in {city}"


def chat_model(srv: ServerThread, model: str, **kw: Any) -> ChatOpenAI:
    return ChatOpenAI(model=model, base_url=f"{srv.url}/v1", api_key="none", max_retries=0, temperature=0, max_tokens=48, **kw)


@pytest.mark.parametrize("model", ["hybridgate/local", "hybridgate/cloud"])
def test_langchain_invoke_stream_and_structured_output(make_gateway: Callable[..., ServerThread], stub, model: str) -> None:
    srv = make_gateway(local={"n_ctx": 1024, "default_max_tokens": 48})
    llm = chat_model(srv, model)
    assert llm.invoke("Say hello.").content
    assert "".join(str(c.content) for c in llm.stream("Say hello.")).strip()
    # The two methods that send the schema (json_mode sends none: it promises a JSON object, not its keys).
    for method in ("json_schema", "function_calling"):
        person = llm.with_structured_output(Person, method=method).invoke("Ada is 36. Give her name and age as JSON.")
        assert isinstance(person, Person), method
    if model == "hybridgate/cloud":
        schemas = [b["response_format"] for b in stub[1].received if "response_format" in b]
        assert any(s["type"] == "json_schema" and s["json_schema"]["schema"]["required"] == ["name", "age"] for s in schemas)


@pytest.mark.parametrize("model", ["hybridgate/local", "hybridgate/cloud"])
def test_langchain_tool_calling_round_trip(make_gateway: Callable[..., ServerThread], stub, model: str) -> None:
    srv = make_gateway(local={"n_ctx": 1024, "default_max_tokens": 48})
    llm = chat_model(srv, model).bind_tools([get_weather], tool_choice="get_weather")
    first = llm.invoke([HumanMessage(Q)])
    assert first.tool_calls and first.tool_calls[0]["name"] == "get_weather" and isinstance(first.tool_calls[0]["args"].get("city"), str)
    result = get_weather.invoke(first.tool_calls[0]["args"])
    answer = chat_model(srv, model).bind_tools([get_weather]).invoke(
        [HumanMessage(Q), first, ToolMessage(result, tool_call_id=first.tool_calls[0]["id"])]
    )
    assert answer.content or answer.tool_calls
    if model == "hybridgate/cloud":
        last = stub[1].received[-1]
        assert last["tools"][0]["function"]["name"] == "get_weather"
        assert [m["role"] for m in last["messages"]] == ["user", "assistant", "tool"]
        assert last["messages"][1]["tool_calls"][0]["function"]["name"] == "get_weather"


def test_litellm_as_a_client_with_tools_and_a_schema(make_gateway: Callable[..., ServerThread], stub) -> None:
    srv = make_gateway()
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    kw = {"api_base": f"{srv.url}/v1", "api_key": "none", "num_retries": 0, "max_tokens": 16}
    out = litellm.completion(model="openai/hybridgate/cloud", messages=[{"role": "user", "content": Q}], tools=tools, **kw)
    call = out.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "stub"}
    assert stub[1].received[-1]["tools"] == tools, "the tools reach the cloud intact"
    fmt = {"type": "json_schema", "json_schema": {"name": "p", "schema": Person.model_json_schema()}}
    local = litellm.completion(model="openai/hybridgate/local", messages=[{"role": "user", "content": "Ada is 36."}], response_format=fmt, **{**kw, "max_tokens": 48})
    Person.model_validate_json(local.choices[0].message.content)


# (what provokes it, status, the OpenAI SDK's class, litellm's class)
ERRORS = [
    ({"api_key": "wrong"}, 401, openai.AuthenticationError, litellm.AuthenticationError),
    # litellm maps no 403 from an OpenAI-compatible server: APIError (a BadRequestError with openai<3, which printed
    # the error's type into the message it reads), always with status_code 403 and the gateway's reason.
    ({"headers": {"x-hybridgate-privacy": "strict"}, "model": "hybridgate/cloud"}, 403, openai.PermissionDeniedError, (litellm.APIError, litellm.BadRequestError)),
    ({"model": "no-such-model"}, 404, openai.NotFoundError, litellm.NotFoundError),
    ({"n": 9}, 400, openai.BadRequestError, litellm.BadRequestError),
    ({"model": "hybridgate/cloud", "key": "poor"}, 429, openai.RateLimitError, litellm.RateLimitError),
    ({"long": True, "model": "hybridgate/local"}, 400, openai.BadRequestError, litellm.ContextWindowExceededError),
]


@pytest.mark.parametrize(("case", "status", "sdk_error", "litellm_error"), ERRORS)
def test_each_client_library_maps_the_gateway_errors(
    make_gateway: Callable[..., ServerThread], stub, case: dict, status: int, sdk_error: type, litellm_error: type | tuple[type, ...]
) -> None:
    srv = make_gateway(
        server={"api_keys": ["rich", "poor"]},
        cloud={"cost_per_1k_prompt_usd": 1.0, "cost_per_1k_completion_usd": 1.0},
        budgets={"per_key_daily_usd": {"poor": 0.0}},
        local={"n_ctx": 512, "default_max_tokens": 8},
    )
    key = case.get("api_key") or case.get("key", "rich")
    model = case.get("model", "hybridgate/local")
    content = "word " * 2000 if case.get("long") else "hi"
    extra = {"n": case["n"]} if "n" in case else {}
    headers = case.get("headers", {})
    sdk = openai.OpenAI(base_url=f"{srv.url}/v1", api_key=key, max_retries=0)
    with pytest.raises(sdk_error) as raised:
        sdk.chat.completions.create(model=model, messages=[{"role": "user", "content": content}], max_tokens=4, extra_headers=headers, **extra)
    assert raised.value.status_code == status
    with pytest.raises(litellm_error) as mapped:
        litellm.completion(
            model=f"openai/{model}", messages=[{"role": "user", "content": content}], api_base=f"{srv.url}/v1", api_key=key,
            num_retries=0, max_tokens=4, extra_headers=headers, **extra,
        )
    assert getattr(mapped.value, "status_code", None) in (status, 400 if status == 403 else status)
    lc = ChatOpenAI(model=model, base_url=f"{srv.url}/v1", api_key=key, max_retries=0, max_tokens=4, default_headers=headers, **({"n": case["n"]} if "n" in case else {}))
    with pytest.raises(sdk_error):  # LangChain raises the OpenAI SDK's classes
        lc.invoke(content)
