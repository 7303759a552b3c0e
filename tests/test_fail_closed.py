"""Fail closed (issue 23, finding 7): the answer cache, a repeated security header, and what the schema states.

- The answer cache was keyed without the privacy mode: a strict request got the cached cloud answer of the
  same default request. The key now holds the mode, and a cloud answer is never served to a request that
  the cloud may not see, whatever the key.
- ``x-hybridgate-privacy`` given twice was read by its first value (``default`` then ``strict``: cloud); every
  value now counts and the most restrictive wins.
- The schema now states what the gateway enforces: a tool message needs ``tool_call_id``, only an assistant
  message carries ``tool_calls``, a numeric rating is within 0..1. Messages generated from the published
  schema are all accepted by the model, and schema-valid ratings are all accepted.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from hypothesis import HealthCheck, given, settings

from tests.conftest import ServerThread, post_chat

HARD = [{"role": "user", "content": "Prove, step by step, that the square root of two is irrational, and explain each step. " * 6}]


def test_a_strict_request_is_never_served_a_cached_cloud_answer(make_gateway: Callable[..., ServerThread]) -> None:
    srv = make_gateway(state={"cache_enabled": True})
    body = {"model": "hybridgate/auto", "messages": HARD, "max_tokens": 4}
    first = post_chat(srv.url, body)
    assert first.status_code == 200 and first.headers["x-hybridgate-route"] == "cloud", first.headers  # scored cloud
    assert post_chat(srv.url, body).headers.get("x-hybridgate-cache") == "hit"  # the cache works for the same mode
    strict = post_chat(srv.url, body, headers={"x-hybridgate-privacy": "strict"})
    assert strict.status_code == 200, strict.text
    assert strict.headers["x-hybridgate-route"] == "local" and strict.headers.get("x-hybridgate-cache") != "hit", strict.headers


def test_a_cloud_answer_under_the_same_key_is_refused_to_a_private_request(make_gateway: Callable[..., ServerThread]) -> None:
    """The fail-closed check behind the key: even a cache entry the key maps to is no cloud answer for a private
    request (a key collision, or an entry written by an older gateway with the old key)."""
    srv = make_gateway(state={"cache_enabled": True})
    gateway = srv.gateway  # type: ignore[attr-defined]
    original = gateway._cache_key
    gateway._cache_key = lambda req, params, key, decision: "one-key-for-all"  # every request maps to one entry
    try:
        body = {"model": "hybridgate/auto", "messages": HARD, "max_tokens": 4}
        assert post_chat(srv.url, body).headers["x-hybridgate-route"] == "cloud"
        strict = post_chat(srv.url, body, headers={"x-hybridgate-privacy": "strict"})
        assert strict.headers["x-hybridgate-route"] == "local" and strict.headers.get("x-hybridgate-cache") != "hit"
    finally:
        gateway._cache_key = original


@pytest.mark.parametrize(
    "values",
    [["default", "strict"], ["strict", "default"], ["default, strict"], ["strict"]],
)
def test_a_repeated_privacy_header_resolves_to_its_most_restrictive_value(gateway: ServerThread, values: list[str]) -> None:
    headers = [("x-hybridgate-privacy", v) for v in values]
    body = {"model": "hybridgate/cloud", "messages": [{"role": "user", "content": "hi"}]}
    r = httpx.post(f"{gateway.url}/v1/route", json=body, headers=headers, timeout=60)
    assert r.status_code == 403 and r.json()["error"]["code"] == "privacy_strict", (values, r.text)
    # A bad value anywhere is refused, not skipped.
    bad = httpx.post(f"{gateway.url}/v1/route", json=body, headers=[*headers, ("x-hybridgate-privacy", "none")], timeout=60)
    assert bad.status_code == 400


def test_the_schema_states_what_the_gateway_enforces() -> None:
    """Bodies generated from the published schema (schemathesis, valid data only) are all accepted by the
    request models: every rule the validators enforce is in the schema (a tool message's tool_call_id, tool
    calls on assistant turns only, json_schema with and only with type json_schema, a rating within 0..1)."""
    import schemathesis
    from pydantic import ValidationError
    from schemathesis import GenerationMode

    from hybridgate.serving.app import create_app
    from hybridgate.serving.schemas import ChatCompletionRequest, FeedbackRequest
    from tests.conftest import gateway_config

    spec = create_app(gateway_config(None, cloud=None), lambda: None).openapi()  # type: ignore[arg-type,return-value]
    rating = spec["components"]["schemas"]["FeedbackRequest"]["properties"]["rating"]
    assert any(b.get("maximum") == 1.0 and b.get("minimum") == 0.0 for b in rating["anyOf"]), rating
    operations = {r.ok().label: r.ok() for r in schemathesis.openapi.from_dict(spec).get_all_operations()}
    refused: list[str] = []
    for label, model, examples in (("POST /v1/chat/completions", ChatCompletionRequest, 80), ("POST /v1/feedback", FeedbackRequest, 30)):

        @given(case=operations[label].as_strategy(generation_mode=GenerationMode.POSITIVE))
        @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True)
        def accepted(case) -> None:  # type: ignore[no-untyped-def]
            try:
                model.model_validate(case.body)
            except ValidationError as exc:
                refused.append(f"{label}: the schema admits {case.body!r:.300}, the gateway refuses it: {exc}")

        accepted()
    assert not refused, "\n".join(refused[:5])
    with pytest.raises(ValidationError):
        FeedbackRequest.model_validate({"id": "x", "rating": 1.5})
