"""The request path in-process, on the Gateway object: which backend a failed call falls back to, and what the
cloud budget sets aside and gives back. The real local model and the stub cloud on loopback, no HTTP in front.

Only the gateway's public methods are used (decide, chat, state), so the tests hold whatever its insides."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from hybridgate.classifiers.embedder import Embedder
from hybridgate.router import BudgetExhausted
from hybridgate.serving.backends.base import BackendError, UpstreamRejected
from hybridgate.serving.backends.local_llama import LlamaBackend
from hybridgate.serving.build import build_gateway
from hybridgate.serving.cloud_request import request_params
from hybridgate.serving.gateway import Answer, Gateway
from hybridgate.serving.schemas import ChatCompletionRequest
from hybridgate.serving.state.base import key_id
from hybridgate.testing.server import ServerThread, gateway_config
from hybridgate.testing.stub_upstream import StubBehaviour, create_stub_app

KEY = "k"
LIMIT_USD = 1.0
PRICES = {"cost_per_1k_prompt_usd": 1.0, "cost_per_1k_completion_usd": 1.0}


@pytest.fixture
def second_stub() -> Iterator[tuple[str, StubBehaviour]]:
    behaviour = StubBehaviour(reply="Hello from the second cloud node.")
    with ServerThread(create_stub_app(behaviour)) as srv:
        yield srv.url, behaviour


@pytest.fixture
def started(local_model: LlamaBackend, query_embedder: Embedder, stub: tuple[str, StubBehaviour]) -> Callable[..., Any]:
    """``async with started(**sections) as gateway``: a gateway in front of the stub cloud, on the test's loop."""

    @asynccontextmanager
    async def start(**sections: Any) -> AsyncIterator[Gateway]:
        gateway = build_gateway(gateway_config(stub[0], **sections), local=local_model, embedder=query_embedder)
        gateway.start()
        try:
            yield gateway
        finally:
            await gateway.aclose()

    return start


def request(model: str, text: str = "Say hello.", max_tokens: int = 4) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens})


async def answer(gateway: Gateway, model: str, break_first: Callable[[str], None] | None = None) -> Answer:
    """What the chat route does: decide, then answer; ``break_first`` is told the chosen backend before answering."""
    req = request(model)
    messages = req.plain_messages()
    params = request_params(req, req.answer_limit, messages)
    decision, ms, prompt_tokens = await gateway.decide(req, messages, KEY, params=params)
    if break_first is not None:
        assert decision.backend is not None
        break_first(decision.backend)
    return await gateway.chat(req, params, decision, ms, KEY, prompt_tokens)


async def room_left(gateway: Gateway) -> float:
    """The budget a new reservation may still take: the limit less today's spend, if nothing is set aside."""
    spent = (await gateway.state.usage_today(key_id(KEY))).cloud_cost_usd
    return LIMIT_USD - spent


async def nothing_set_aside(gateway: Gateway) -> bool:
    """True when the whole remaining budget can be reserved: no reservation is left behind (given back at once)."""
    kid, room = key_id(KEY), await room_left(gateway)
    if not await gateway.state.reserve(kid, room, LIMIT_USD):
        return False
    await gateway.state.release(kid, room)
    return True


# -- fallback choice ------------------------------------------------------------------------------


async def test_a_failed_cloud_node_fails_over_to_the_other_cloud_node_before_the_local_model(
    started: Callable[..., Any], stub: tuple[str, StubBehaviour], second_stub: tuple[str, StubBehaviour]
) -> None:
    nodes = {"cloud": stub[1], "cloud2": second_stub[1]}
    edge = {"name": "cloud2", "model": "openai/stub-large", "route": "cloud", "api_base": f"{second_stub[0]}/v1", "timeout_s": 5, "max_retries": 0}
    async with started(edge_nodes=[edge]) as gateway:

        def break_node(name: str) -> None:  # whichever node the choice put first fails; the other is healthy
            nodes[name].mode = "error500"

        out = await answer(gateway, "hybridgate/cloud", break_node)
    failed = out.routing.fallback_from
    assert failed in nodes and out.routing.backend == ({"cloud", "cloud2"} - {failed}).pop(), out.routing.as_dict()
    assert out.routing.route.value == "cloud" and out.completion.text == nodes[out.routing.backend].reply
    assert len(nodes[failed].received) == 1 and len(nodes[out.routing.backend].received) == 1


async def test_a_failed_cloud_call_falls_back_to_the_local_model_when_allowed(started: Callable[..., Any], stub: tuple[str, StubBehaviour]) -> None:
    stub[1].mode = "error500"
    async with started() as gateway:
        out = await answer(gateway, "cloud")
    assert out.routing.fallback_from == "cloud" and out.routing.backend == "local" and out.routing.route.value == "local"
    assert out.routing.fallback_reason
    assert out.completion.text and len(stub[1].received) == 1


async def test_without_fallback_to_local_a_failed_cloud_call_is_the_error(started: Callable[..., Any], stub: tuple[str, StubBehaviour]) -> None:
    stub[1].mode = "error500"
    async with started(cloud={"fallback_to_local": False}) as gateway:
        with pytest.raises(BackendError) as failed:
            await answer(gateway, "cloud")
    assert not isinstance(failed.value, UpstreamRejected)


async def test_a_request_the_cloud_rejects_is_never_retried_elsewhere(started: Callable[..., Any], stub: tuple[str, StubBehaviour]) -> None:
    """A 4xx says the request itself is bad: the local model (or another node) would only hide the client's error."""
    stub[1].mode = "reject"
    async with started() as gateway:
        with pytest.raises(UpstreamRejected):
            await answer(gateway, "cloud")
    assert len(stub[1].received) == 1


# -- budget reservation ---------------------------------------------------------------------------


async def test_a_cloud_call_holds_part_of_the_budget_while_in_flight_and_gives_it_back(
    started: Callable[..., Any], stub: tuple[str, StubBehaviour]
) -> None:
    stub[1].gate = threading.Event()  # the stub keeps the call in flight until the probe below has looked
    async with started(cloud=PRICES, budgets={"default_daily_usd": LIMIT_USD}) as gateway:
        assert await nothing_set_aside(gateway)
        call = asyncio.create_task(answer(gateway, "cloud"))
        while not stub[1].received:  # the call reached the cloud: its reservation was made before it was sent
            assert not call.done(), call
            await asyncio.sleep(0.01)
        assert not await nothing_set_aside(gateway), "a call in flight holds part of the budget"
        stub[1].gate.set()
        out = await call
        spent = (await gateway.state.usage_today(key_id(KEY))).cloud_cost_usd
        assert out.routing.route.value == "cloud" and spent > 0
        assert await nothing_set_aside(gateway), "after the answer its spend is counted and nothing stays set aside"


async def test_a_failed_cloud_call_spends_nothing_and_gives_its_reservation_back(
    started: Callable[..., Any], stub: tuple[str, StubBehaviour]
) -> None:
    stub[1].mode = "error500"
    async with started(cloud={**PRICES, "fallback_to_local": False}, budgets={"default_daily_usd": LIMIT_USD}) as gateway:
        with pytest.raises(BackendError):
            await answer(gateway, "cloud")
        assert (await gateway.state.usage_today(key_id(KEY))).cloud_cost_usd == 0.0
        assert await nothing_set_aside(gateway)
    assert len(stub[1].received) == 1


async def test_a_reservation_that_does_not_fit_refuses_a_pinned_request_and_moves_an_automatic_one(
    started: Callable[..., Any], stub: tuple[str, StubBehaviour]
) -> None:
    tiny = {"default_daily_usd": 0.001}  # less than any answer's worst cost at these prices
    async with started(cloud=PRICES, budgets=tiny, router={"threshold": 0.0}) as gateway:
        with pytest.raises(BudgetExhausted):
            await answer(gateway, "cloud")
        out = await answer(gateway, "hybridgate/auto")
        assert out.routing.fallback_from == "cloud" and out.routing.backend == "local"
        assert "budget" in (out.routing.fallback_reason or "")
        assert (await gateway.state.usage_today(key_id(KEY))).cloud_cost_usd == 0.0
    assert stub[1].received == []
