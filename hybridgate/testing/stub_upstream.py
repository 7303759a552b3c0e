"""A scriptable OpenAI-compatible server: the paid cloud's stand-in in tests and benchmarks.

It answers with a fixed reply and no model, so a benchmark measures only the
path in front of it, and it can be told (``POST /_control``) to fail the way
real providers do: HTTP 500, a slow answer, or a stream cut short. Every body
it receives is kept, so a test can check what the cloud was sent.

It can also play an edge node with a speed of its own: ``ms_per_token`` per
word of its reply, slowed by every request it is running and by an
``external_load`` of other users' requests (a node's compute is shared), after
``first_token_s``; ``GET /metrics`` reports its running requests as the
Prometheus gauge ``stub_requests_running``, as llama.cpp and vLLM servers do.

It keeps the contracts a real provider keeps: with ``tools`` (and a
``tool_choice`` other than none) it calls the named or first tool with
arguments made from that tool's schema, streamed in pieces when asked; with a
JSON ``response_format`` its reply is a JSON object that matches the schema;
with ``n`` it gives n choices, and with ``logprobs`` log-probabilities.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass
class StubBehaviour:
    mode: str = "ok"  # ok | error500 | slow | cut | reject (a 400, as a provider refusing the request)
    delay_s: float = 0.0
    reply: str = "Hello from the stub cloud."
    received: list[dict[str, Any]] = field(default_factory=list)
    keep_bodies: bool = True
    network_s: float = 0.0  # before any answer, every endpoint: the network between gateway and node
    first_token_s: float = 0.0  # before the first word (a node's prefill)
    ms_per_token: float = 0.0  # per word of the reply when it serves one request alone
    external_load: float = 0.0  # other users' requests sharing the node
    reply_words: int | None = None  # reply with this many words instead of ``reply``
    stream_usage: bool = True  # False: a stream never reports usage, as providers that ignore stream_options
    running: int = 0
    # When set: an answer waits (after the body is kept) until the gate is opened, so a test can look at the
    # gateway while a call is in flight without guessing how long the call takes.
    gate: threading.Event | None = None

    def word_delay_s(self) -> float:
        """A shared node: each word takes longer for every other request it serves meanwhile."""
        return self.ms_per_token / 1000.0 * (self.running + self.external_load)


def example_for(schema: Any, depth: int = 0) -> Any:
    """The smallest value that matches a JSON schema (required properties only; enum and const honoured)."""
    if not isinstance(schema, dict) or depth > 16:
        return {}
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return example_for(schema[key][0], depth + 1)
    kind = schema.get("type", "object")
    kind = next((k for k in kind if k != "null"), "null") if isinstance(kind, list) else kind
    if kind == "object":
        props = schema.get("properties") or {}
        return {k: example_for(props.get(k, {}), depth + 1) for k in schema.get("required", list(props))}
    if kind == "array":
        return [example_for(schema.get("items", {}), depth + 1) for _ in range(int(schema.get("minItems", 0)))]
    return {"string": "stub", "integer": 1, "number": 1.5, "boolean": True, "null": None}.get(kind, "stub")


def _tool_call(body: dict[str, Any]) -> dict[str, Any] | None:
    tools, choice = body.get("tools") or [], body.get("tool_choice", "auto")
    if not tools or choice == "none":
        return None
    name = choice["function"]["name"] if isinstance(choice, dict) else tools[0]["function"]["name"]
    fn = next(t["function"] for t in tools if t["function"]["name"] == name)
    args = example_for(fn.get("parameters") or {"type": "object"})
    return {"id": "call_stub", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}


def _reply_text(body: dict[str, Any], default: str) -> str:
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return json.dumps(example_for((fmt.get("json_schema") or {}).get("schema") or {}))
    if fmt.get("type") == "json_object":
        return json.dumps({"reply": default})
    return default


def create_stub_app(behaviour: StubBehaviour | None = None) -> Starlette:
    b = behaviour or StubBehaviour()

    async def chat(request: Request) -> Response:
        body = json.loads(await request.body())
        if b.network_s:
            await asyncio.sleep(b.network_s)
        if b.keep_bodies:
            b.received.append(body)
        while b.gate is not None and not b.gate.is_set():
            await asyncio.sleep(0.005)
        if b.mode == "error500":
            return JSONResponse({"error": {"message": "stub failure", "type": "server_error"}}, status_code=500)
        if b.mode == "reject":
            return JSONResponse({"error": {"message": "stub refuses this request", "type": "invalid_request_error"}}, status_code=400)
        if b.mode == "slow" or b.delay_s:
            await asyncio.sleep(b.delay_s or 30)
        reply = _reply_text(body, b.reply if b.reply_words is None else " ".join(["word"] * b.reply_words))
        call = _tool_call(body)
        words = reply.split(" ")
        model = body.get("model", "stub")
        created = int(time.time())
        choices_n = int(body.get("n") or 1)  # a provider bills every choice's tokens
        usage = {"prompt_tokens": 10, "completion_tokens": len(words) * choices_n, "total_tokens": 10 + len(words) * choices_n}
        paced = b.ms_per_token > 0 or b.first_token_s > 0
        if not body.get("stream"):
            if paced:
                b.running += 1
                try:
                    await asyncio.sleep(b.first_token_s)
                    for _ in words:
                        await asyncio.sleep(b.word_delay_s())
                finally:
                    b.running -= 1
            message: dict[str, Any] = {"role": "assistant", "content": None if call else reply}
            if call:
                message["tool_calls"] = [call]
            logprobs = None
            if body.get("logprobs"):
                top = int(body.get("top_logprobs") or 0)
                logprobs = {"content": [{"token": w, "logprob": -0.1, "bytes": list(w.encode()), "top_logprobs": [{"token": w, "logprob": -0.1, "bytes": list(w.encode())}] * top} for w in words]}
            choices = [
                {"index": i, "message": message, "finish_reason": "tool_calls" if call else "stop", "logprobs": logprobs}
                for i in range(int(body.get("n") or 1))
            ]
            return JSONResponse({"id": "chatcmpl-stub", "object": "chat.completion", "created": created, "model": model, "choices": choices, "usage": usage})

        async def events() -> Any:
            base = {"id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": created, "model": model}
            if call:  # as providers stream a call: id and name first, then the arguments in pieces
                args = call["function"]["arguments"]
                first = {"index": 0, "id": call["id"], "type": "function", "function": {"name": call["function"]["name"], "arguments": ""}}
                for delta in (first, {"index": 0, "function": {"arguments": args[: len(args) // 2]}}, {"index": 0, "function": {"arguments": args[len(args) // 2 :]}}):
                    yield "data: " + json.dumps({**base, "choices": [{"index": 0, "delta": {"tool_calls": [delta]}, "finish_reason": None}]}) + "\n\n"
                yield "data: " + json.dumps({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}) + "\n\n"
                if b.stream_usage and (body.get("stream_options") or {}).get("include_usage"):
                    yield "data: " + json.dumps({**base, "choices": [], "usage": usage}) + "\n\n"
                yield "data: [DONE]\n\n"
                return
            if paced:
                b.running += 1
            try:
                if paced:
                    await asyncio.sleep(b.first_token_s)
                for i, w in enumerate(words):
                    if b.mode == "cut" and i == 1:
                        raise RuntimeError("stream cut by the stub")
                    if paced and i:
                        await asyncio.sleep(b.word_delay_s())
                    piece = w if i == 0 else " " + w
                    yield "data: " + json.dumps({**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}) + "\n\n"
            finally:
                if paced:
                    b.running -= 1
            yield "data: " + json.dumps({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}) + "\n\n"
            if b.stream_usage and (body.get("stream_options") or {}).get("include_usage"):
                yield "data: " + json.dumps({**base, "choices": [], "usage": usage}) + "\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def models(_: Request) -> Response:
        if b.network_s:
            await asyncio.sleep(b.network_s)
        return JSONResponse({"object": "list", "data": [{"id": "stub", "object": "model", "owned_by": "stub"}]})

    async def metrics(_: Request) -> Response:
        if b.network_s:
            await asyncio.sleep(b.network_s)
        running = b.running + b.external_load
        text = f"# HELP stub_requests_running Requests being served.\n# TYPE stub_requests_running gauge\nstub_requests_running {running}\n"
        return Response(text, media_type="text/plain; version=0.0.4")

    async def control(request: Request) -> Response:
        data = json.loads(await request.body() or b"{}")
        for k in ("mode", "delay_s", "reply", "keep_bodies", "network_s", "first_token_s", "ms_per_token", "external_load", "reply_words"):
            if k in data:
                setattr(b, k, data[k])
        if data.get("clear"):
            b.received.clear()
        return JSONResponse({"mode": b.mode, "received": len(b.received)})

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models),
            Route("/metrics", metrics),
            Route("/_control", control, methods=["POST"]),
        ]
    )
    app.state.behaviour = b
    return app


def main() -> None:
    """``python -m hybridgate.testing.stub_upstream PORT``: run the stub on loopback (used by the benchmark)."""
    import sys

    import uvicorn

    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9999
    uvicorn.run(create_stub_app(StubBehaviour(keep_bodies=False)), host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
