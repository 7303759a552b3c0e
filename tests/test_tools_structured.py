"""Structured output, tools, several choices and log-probabilities on both routes, through the OpenAI SDK.

The local route is the real SmolLM2 under llama.cpp's grammar; the cloud route is the loopback stub, which
records what it was sent, so each test checks both what the client got and what reached the cloud."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import jsonschema
import openai
import pytest
from pydantic import BaseModel

from tests.conftest import ServerThread, post_chat

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
        },
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "description": "The time in a timezone.", "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}}}
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}, "tags": {"type": "array", "items": {"type": "string"}}},
    "required": ["name", "age", "tags"],
    "additionalProperties": False,
}
ASK = [{"role": "user", "content": "Describe a person called Ada who is 36, as JSON."}]


class Person(BaseModel):
    name: str
    age: int


def client(srv: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{srv.url}/v1", api_key="none", max_retries=0)


@pytest.mark.parametrize("model", ["hybridgate/local", "hybridgate/cloud"])
def test_json_schema_answers_parse_and_validate_on_both_routes(make_gateway: Callable[..., ServerThread], stub, model: str) -> None:
    srv = make_gateway(local={"n_ctx": 1024, "default_max_tokens": 96})
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
    raw = client(srv).chat.completions.with_raw_response.create(model=model, messages=ASK, response_format=fmt, max_tokens=160, temperature=0)
    out = raw.parse()
    assert raw.headers["x-hybridgate-route"] == model.split("/")[1]
    jsonschema.validate(json.loads(out.choices[0].message.content), PERSON)
    if model == "hybridgate/cloud":
        assert stub[1].received[-1]["response_format"] == fmt, "the schema reaches the cloud intact"


def test_json_object_mode_locally_and_the_sdk_parse_helper(make_gateway: Callable[..., ServerThread], stub) -> None:
    srv = make_gateway(local={"n_ctx": 1024, "default_max_tokens": 64})
    c = client(srv)
    out = c.chat.completions.create(model="hybridgate/local", messages=ASK, response_format={"type": "json_object"}, max_tokens=128, temperature=0)
    assert out.choices[0].finish_reason == "stop" and isinstance(json.loads(out.choices[0].message.content), dict)
    for model in ("hybridgate/local", "hybridgate/cloud"):
        parsed = c.chat.completions.parse(model=model, messages=ASK, response_format=Person, max_tokens=64, temperature=0)
        assert isinstance(parsed.choices[0].message.parsed, Person), model


def test_a_local_tool_call_names_a_declared_tool_with_arguments_that_match(make_gateway: Callable[..., ServerThread], stub) -> None:
    srv = make_gateway(local={"n_ctx": 1024, "default_max_tokens": 64})
    c = client(srv)
    msgs = [{"role": "user", "content": "What is the weather in Paris in celsius?"}]
    out = c.chat.completions.create(model="hybridgate/local", messages=msgs, tools=[WEATHER, TIME], tool_choice="required", max_tokens=64)
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    call = choice.message.tool_calls[0]
    assert call.function.name in ("get_weather", "get_time")
    schema = (WEATHER if call.function.name == "get_weather" else TIME)["function"]["parameters"]
    jsonschema.validate(json.loads(call.function.arguments), schema)
    named = c.chat.completions.create(
        model="hybridgate/local", messages=msgs, tools=[WEATHER, TIME], tool_choice={"type": "function", "function": {"name": "get_time"}}, max_tokens=48
    )
    assert named.choices[0].message.tool_calls[0].function.name == "get_time"
    # The round trip: the tool's result goes back, and the model answers (in words or with another call).
    back = [*msgs, choice.message.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 18}'}]
    again = c.chat.completions.create(model="hybridgate/local", messages=back, tools=[WEATHER], max_tokens=48)
    assert again.choices[0].message.content or again.choices[0].message.tool_calls


def test_tools_go_to_the_cloud_by_default_and_stream_their_calls(make_gateway: Callable[..., ServerThread], stub) -> None:
    srv = make_gateway(router={"threshold": 1.0})  # every score says local: only the tools rule sends it to the cloud
    c = client(srv)
    msgs = [{"role": "user", "content": "Weather in Oslo?"}]
    raw = c.chat.completions.with_raw_response.create(model="hybridgate/auto", messages=msgs, tools=[WEATHER], parallel_tool_calls=False)
    out = raw.parse()
    assert raw.headers["x-hybridgate-route"] == "cloud" and out.choices[0].message.tool_calls[0].function.name == "get_weather"
    assert "router.tools" in json.loads(raw.http_response.text)["hybridgate"]["decided"]["reasons"][-1]
    sent = stub[1].received[-1]
    assert sent["tools"] == [WEATHER] and sent["parallel_tool_calls"] is False
    pieces = list(c.chat.completions.create(model="hybridgate/auto", messages=msgs, tools=[WEATHER], stream=True))
    calls = [tc for p in pieces for ch in p.choices for tc in (ch.delta.tool_calls or [])]
    assert calls[0].id == "call_stub" and calls[0].function.name == "get_weather"
    assert json.loads("".join(tc.function.arguments or "" for tc in calls)) == {"city": "stub", "unit": "celsius"}
    assert pieces[-1].choices[0].finish_reason == "tool_calls" or any(ch.finish_reason == "tool_calls" for p in pieces for ch in p.choices)


def test_tools_rule_local_and_reject(make_gateway: Callable[..., ServerThread], stub) -> None:
    body = {"model": "hybridgate/auto", "messages": [{"role": "user", "content": "Weather in Oslo?"}], "tools": [WEATHER], "max_tokens": 48}
    local = make_gateway(router={"threshold": 0.0, "tools": "local"}, local={"n_ctx": 1024, "default_max_tokens": 48})
    r = post_chat(local.url, body)
    assert r.status_code == 200 and r.headers["x-hybridgate-route"] == "local"
    assert "keeps it local" in r.json()["hybridgate"]["decided"]["reasons"][-1]
    refused = post_chat(make_gateway(router={"tools": "reject"}).url, body)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "tools_not_allowed"


def test_personal_data_in_tool_arguments_keeps_the_request_local(make_gateway: Callable[..., ServerThread], stub) -> None:
    srv = make_gateway(router={"threshold": 0.0})
    msgs = [
        {"role": "user", "content": "Email the report."},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "send", "arguments": '{"to": "jane.doe@example.com"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sent"},
    ]
    d = httpx.post(f"{srv.url}/v1/route", json={"model": "hybridgate/auto", "messages": msgs}).json()
    assert d["route"] == "local" and "email" in d["personal_data"]
    r = post_chat(srv.url, {"model": "hybridgate/redact", "messages": msgs, "max_tokens": 5})
    assert r.status_code == 200
    sent = json.dumps(stub[1].received[-1]["messages"])
    assert "jane.doe@example.com" not in sent and "[EMAIL_1]" in sent, "tool arguments are redacted like any content"


def test_several_choices_and_log_probabilities_on_both_routes(make_gateway: Callable[..., ServerThread], stub) -> None:
    srv = make_gateway(local={"n_ctx": 1024, "default_max_tokens": 8})
    c = client(srv)
    msgs = [{"role": "user", "content": "Name a colour."}]
    local = c.chat.completions.create(model="hybridgate/local", messages=msgs, n=2, seed=7, max_tokens=6, logprobs=True, top_logprobs=3)
    assert [ch.index for ch in local.choices] == [0, 1]
    lp = local.choices[0].logprobs.content
    assert lp and all(t.logprob <= 0 and len(t.top_logprobs) == 3 for t in lp)
    assert "".join(t.token for t in lp) == local.choices[0].message.content, "one entry per answer token"
    assert lp[0].top_logprobs[0].logprob >= lp[0].logprob
    cloud = c.chat.completions.create(model="hybridgate/cloud", messages=msgs, n=3, logprobs=True, top_logprobs=1, max_tokens=6)
    assert len(cloud.choices) == 3 and cloud.choices[2].logprobs.content[0].top_logprobs
    assert stub[1].received[-1]["n"] == 3 and stub[1].received[-1]["top_logprobs"] == 1


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2, "stream": True}, "n"),
        ({"logprobs": True, "stream": True}, "logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tools": [WEATHER, WEATHER]}, "tools"),
        ({"functions": [WEATHER["function"]]}, "functions"),
    ],
)
def test_what_a_route_cannot_serve_is_a_400_naming_the_field(make_gateway: Callable[..., ServerThread], stub, extra: dict, param: str) -> None:
    r = post_chat(make_gateway().url, {"model": "hybridgate/local", "messages": [{"role": "user", "content": "hi"}], **extra})
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


def test_collaborative_modes_keep_the_response_format(make_gateway: Callable[..., ServerThread], stub) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    # A cascade whose local draft is cut off (3 tokens) breaks the format: it escalates, whatever its confidence.
    srv = make_gateway(collaboration={"cascade_max_tokens": 3, "cascade_min_confidence": 0.0})
    r = post_chat(srv.url, {"model": "hybridgate/cascade", "messages": ASK, "response_format": fmt, "max_tokens": 64})
    info = r.json()["hybridgate"]["collaboration"]
    assert info["escalated"] is True and "not JSON" in info["fallback"], info
    jsonschema.validate(json.loads(r.json()["choices"][0]["message"]["content"]), PERSON)
    # Draft-refine: the cloud's final answer is asked for in the same format.
    r = post_chat(srv.url, {"model": "hybridgate/draft-refine", "messages": ASK, "response_format": fmt, "max_tokens": 64})
    assert r.status_code == 200 and stub[1].received[-1]["response_format"] == fmt
    jsonschema.validate(json.loads(r.json()["choices"][0]["message"]["content"]), PERSON)


def test_the_grammar_schema_is_always_stricter_than_the_clients() -> None:
    """Whatever the bounds add, a value that meets them meets the client's schema too."""
    from hybridgate.serving.structured import budget_bounded

    schema = {
        "type": "object",
        "properties": {
            "age": {"type": "integer", "minimum": 3, "maximum": 130},
            "p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "name": {"type": "string", "minLength": 2},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 500}},
        },
        "required": ["age", "p", "name", "tags"],
    }
    tight = budget_bounded(schema, 64)
    props = tight["properties"]
    assert props["age"]["enum"] == list(range(3, 131)) and 0 not in props["p"]["enum"] and max(props["p"]["enum"]) == 1
    assert props["name"]["maxLength"] >= 2 and props["tags"]["items"]["maxLength"] <= 500 and props["tags"]["maxItems"] == 8
    for age in props["age"]["enum"][::17]:
        for p in props["p"]["enum"][::13]:
            value = {"age": age, "p": p, "name": "x" * props["name"]["maxLength"], "tags": ["y" * props["tags"]["items"]["maxLength"]] * 8}
            jsonschema.validate(value, schema)
