"""The official OpenAI SDK against the gateway, with the real local model."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import openai
import pytest

from tests.conftest import ServerThread


def client(srv: ServerThread, **kw: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{srv.url}/v1", api_key=kw.pop("api_key", "unused"), max_retries=0, **kw)  # type: ignore[arg-type]


def test_local_answer_non_streaming(gateway: ServerThread) -> None:
    raw = client(gateway).chat.completions.with_raw_response.create(
        model="hybridgate/local", messages=[{"role": "user", "content": "What is the capital of France?"}], max_tokens=12, temperature=0
    )
    out = raw.parse()
    assert out.choices[0].message.content.strip()
    assert out.usage.prompt_tokens > 5 and 0 < out.usage.completion_tokens <= 12
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens
    assert raw.headers["x-hybridgate-route"] == "local"
    assert raw.headers["x-hybridgate-backend"] == "local"
    assert float(raw.headers["x-hybridgate-decision-ms"]) >= 0
    body = raw.http_response.json()["hybridgate"]
    assert body["route"] == "local" and body["decided"]["reasons"]


def test_local_answer_streaming_matches_greedy_answer(gateway: ServerThread) -> None:
    c = client(gateway)
    msgs = [{"role": "user", "content": "Name a colour."}]
    whole = c.chat.completions.create(model="hybridgate/local", messages=msgs, max_tokens=10, temperature=0)
    pieces, usage, finish = [], None, None
    for chunk in c.chat.completions.create(
        model="hybridgate/local", messages=msgs, max_tokens=10, temperature=0, stream=True, stream_options={"include_usage": True}
    ):
        if chunk.usage:
            usage = chunk.usage
        for ch in chunk.choices:
            pieces.append(ch.delta.content or "")
            finish = ch.finish_reason or finish
    assert len([p for p in pieces if p]) >= 2, "the answer must arrive in several chunks"
    assert "".join(pieces) == whole.choices[0].message.content
    assert finish in ("stop", "length")
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens


def test_rules_route_short_question_locally_and_long_reasoning_to_cloud(make_gateway: Callable[..., ServerThread]) -> None:
    c = client(make_gateway(router={"scorer": "rules"}))
    short = c.chat.completions.with_raw_response.create(
        model="hybridgate/auto", messages=[{"role": "user", "content": "Hi!"}], max_tokens=4
    )
    hard = "Prove that the sum of two even integers is even, step by step, and explain why.\n" + "Context. " * 300
    long = c.chat.completions.with_raw_response.create(
        model="hybridgate/auto", messages=[{"role": "user", "content": hard}], max_tokens=4
    )
    assert short.headers["x-hybridgate-route"] == "local"
    assert long.headers["x-hybridgate-route"] == "cloud"
    assert float(long.headers["x-hybridgate-score"]) > float(short.headers["x-hybridgate-score"])


def test_cloud_route_through_litellm(gateway: ServerThread, stub) -> None:
    _, behaviour = stub
    out = client(gateway).chat.completions.create(
        model="hybridgate/cloud", messages=[{"role": "user", "content": "hello"}], max_tokens=5, user="u1",
        stop=["END"], top_p=0.9, temperature=0.3,
    )
    assert out.choices[0].message.content == behaviour.reply
    sent = behaviour.received[-1]
    assert sent["model"] == "stub-large" and sent["max_tokens"] == 5 and sent["messages"][0]["content"] == "hello"
    assert (sent["stop"], sent["top_p"], sent["temperature"]) == (["END"], 0.9, 0.3)


def test_local_honours_stop_sequences(gateway: ServerThread) -> None:
    c = client(gateway)
    msgs = [{"role": "user", "content": "Count from 1 to 10, separated by commas."}]
    free = c.chat.completions.create(model="hybridgate/local", messages=msgs, max_tokens=30, temperature=0)
    text = free.choices[0].message.content
    assert "," in text, text
    cut = c.chat.completions.create(model="hybridgate/local", messages=msgs, max_tokens=30, temperature=0, stop=[","])
    assert cut.choices[0].message.content == text.split(",")[0]
    assert cut.choices[0].finish_reason == "stop"


def test_models_lists_aliases_and_backends(gateway: ServerThread) -> None:
    ids = [m.id for m in client(gateway).models.list().data]
    assert {"hybridgate/auto", "hybridgate/local", "hybridgate/cloud", "local", "cloud"} <= set(ids)


def test_openai_sdk_sees_typed_errors(gateway: ServerThread) -> None:
    with pytest.raises(openai.NotFoundError):
        client(gateway).chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError):
        client(gateway).chat.completions.create(model="hybridgate/local", messages=[{"role": "user", "content": "x"}], n=9)


def test_healthz_answers_during_a_long_generation(gateway: ServerThread) -> None:
    import threading
    import time

    done = threading.Event()

    def long_generation() -> None:
        httpx.post(
            f"{gateway.url}/v1/chat/completions",
            json={"model": "hybridgate/local", "messages": [{"role": "user", "content": "Tell a long story."}], "max_tokens": 200},
            timeout=120,
        )
        done.set()

    t = threading.Thread(target=long_generation)
    t.start()
    time.sleep(0.5)
    r = httpx.get(f"{gateway.url}/healthz", timeout=5)
    still_generating = not done.is_set()
    t.join()
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    assert still_generating, "/healthz must answer while the generation is still running"
