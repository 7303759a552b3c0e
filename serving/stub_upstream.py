"""A scriptable OpenAI-compatible server: the paid cloud's stand-in in tests and benchmarks.

It answers with a fixed reply and no model, so a benchmark measures only the
path in front of it, and it can be told (``POST /_control``) to fail the way
real providers do: HTTP 500, a slow answer, or a stream cut short. Every body
it receives is kept, so a test can check what the cloud was sent.
"""

from __future__ import annotations

import asyncio
import json
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


def create_stub_app(behaviour: StubBehaviour | None = None) -> Starlette:
    b = behaviour or StubBehaviour()

    async def chat(request: Request) -> Response:
        body = json.loads(await request.body())
        if b.keep_bodies:
            b.received.append(body)
        if b.mode == "error500":
            return JSONResponse({"error": {"message": "stub failure", "type": "server_error"}}, status_code=500)
        if b.mode == "reject":
            return JSONResponse({"error": {"message": "stub refuses this request", "type": "invalid_request_error"}}, status_code=400)
        if b.mode == "slow" or b.delay_s:
            await asyncio.sleep(b.delay_s or 30)
        words = b.reply.split(" ")
        model = body.get("model", "stub")
        created = int(time.time())
        usage = {"prompt_tokens": 10, "completion_tokens": len(words), "total_tokens": 10 + len(words)}
        if not body.get("stream"):
            return JSONResponse(
                {
                    "id": "chatcmpl-stub",
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": b.reply}, "finish_reason": "stop"}],
                    "usage": usage,
                }
            )

        async def events() -> Any:
            base = {"id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": created, "model": model}
            for i, w in enumerate(words):
                if b.mode == "cut" and i == 1:
                    raise RuntimeError("stream cut by the stub")
                piece = w if i == 0 else " " + w
                yield "data: " + json.dumps({**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}) + "\n\n"
            yield "data: " + json.dumps({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}) + "\n\n"
            if (body.get("stream_options") or {}).get("include_usage"):
                yield "data: " + json.dumps({**base, "choices": [], "usage": usage}) + "\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def models(_: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "stub", "object": "model", "owned_by": "stub"}]})

    async def control(request: Request) -> Response:
        data = json.loads(await request.body() or b"{}")
        for k in ("mode", "delay_s", "reply", "keep_bodies"):
            if k in data:
                setattr(b, k, data[k])
        if data.get("clear"):
            b.received.clear()
        return JSONResponse({"mode": b.mode, "received": len(b.received)})

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models),
            Route("/_control", control, methods=["POST"]),
        ]
    )
    app.state.behaviour = b
    return app


def main() -> None:
    """``python -m hybridgate.serving.stub_upstream PORT``: run the stub on loopback (used by the benchmark)."""
    import sys

    import uvicorn

    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9999
    uvicorn.run(create_stub_app(StubBehaviour(keep_bodies=False)), host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
