"""The lean request path (serving/gateway.py): a small request pinned to the cloud, whose key has no budget to
set aside, is decided on the event loop without the local model's token count. It must decide exactly as the
full path does, and what the count was for must still be there when it is needed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybridgate.classifiers.embedder import Embedder
from hybridgate.serving.backends.local_llama import LlamaBackend
from hybridgate.serving.build import build_gateway
from hybridgate.serving.cloud_request import request_params
from hybridgate.serving.schemas import ChatCompletionRequest
from hybridgate.testing.server import gateway_config
from hybridgate.testing.stub_upstream import StubBehaviour
from tests.conftest import ServerThread

# Pieces of text, personal data among them, that a request's strings are made of.
PIECES = ["Say hello.", "ada@example.org", "card 4111 1111 1111 1111", "Ada Lovelace", "call +44 20 7946 0958", "the weather", "ü ß 東京"]
text = st.lists(st.sampled_from(PIECES), min_size=1, max_size=4).map(" ".join)


def test_a_stream_without_provider_usage_is_counted_by_the_local_tokenizer(
    make_gateway: Callable[..., ServerThread], stub: tuple[str, StubBehaviour]
) -> None:
    """The lean path does not count the prompt; a provider that reports no usage gets it counted afterwards,
    as before (the usage event and the accounting read the local model's count, not 0)."""
    stub[1].stream_usage = False
    gw = make_gateway()
    messages = [{"role": "user", "content": "Say hello in one short sentence."}]
    body = {"model": "hybridgate/cloud", "messages": messages, "stream": True, "stream_options": {"include_usage": True}}
    usage: dict[str, Any] | None = None
    with httpx.stream("POST", f"{gw.url}/v1/chat/completions", json=body, timeout=30) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: {"):
                usage = json.loads(line[6:]).get("usage") or usage
    expected = gw.gateway.local.count_prompt_tokens(messages)  # type: ignore[attr-defined]
    assert usage is not None and expected > 0
    assert usage["prompt_tokens"] == expected


def test_the_lean_decision_is_the_full_one(local_model: LlamaBackend, query_embedder: Embedder, stub: tuple[str, StubBehaviour]) -> None:
    """For any small request pinned to the cloud (personal data in its content, stop sequences or user field
    included), the decision made on the event loop without counting equals the counted one: the same route,
    backend, personal data found and reasons, or the same refusal."""
    cfg = gateway_config(stub[0], privacy={"names": ["Ada Lovelace"]})
    gateway = build_gateway(cfg, local=local_model, embedder=query_embedder)

    async def both(req: ChatCompletionRequest) -> tuple[Any, Any]:
        messages = req.plain_messages()
        params = request_params(req, req.answer_limit, messages)
        out = []
        for count in (False, True):
            try:
                decision, _, tokens = await gateway.decide(req, messages, None, params=params, count=count)
                out.append((decision.as_dict(), tokens is None))
            except Exception as exc:  # noqa: BLE001 - a refusal must be the same refusal
                out.append((type(exc).__name__, str(exc)))
        return out[0], out[1]

    @given(content=text, stop=st.none() | text.map(lambda t: [t]), model=st.sampled_from(["hybridgate/cloud", "cloud"]))
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True)
    def check(content: str, stop: list[str] | None, model: str) -> None:
        req = ChatCompletionRequest.model_validate({"model": model, "messages": [{"role": "user", "content": content}], "stop": stop, "max_tokens": 4})
        lean, full = asyncio.run(both(req))
        assert type(lean[0]) is type(full[0]), f"one path refused, the other did not: lean {lean}, full {full}"
        if isinstance(lean[0], dict):
            assert lean[1] and not full[1], "the lean path skips the count, the dry run makes it"
            assert lean[0] == full[0]
        else:
            assert lean == full

    try:
        check()
    finally:
        asyncio.run(gateway.aclose())
