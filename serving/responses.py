"""OpenAI's response shapes: a chat.completion object and chat.completion.chunk SSE events."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from hybridgate.serving.backends.base import Completion, Delta, Usage
from hybridgate.serving.gateway import Routing, StreamAnswer


def _usage(u: Usage) -> dict[str, int]:
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "total_tokens": u.total_tokens}


def _choice(index: int, c: Completion) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": c.text}
    if c.tool_calls:
        message["content"] = c.text or None
        message["tool_calls"] = c.tool_calls
    return {"index": index, "message": message, "finish_reason": c.finish_reason, "logprobs": c.logprobs}


def completion_body(c: Completion, routing: Routing) -> dict[str, Any]:
    return {
        "id": routing.request_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": c.model,
        "choices": [_choice(i, choice) for i, choice in enumerate((c, *c.alternatives))],
        "usage": _usage(c.usage),
        "hybridgate": routing.as_dict(),
    }


_SETTLING: set[asyncio.Task[Any]] = set()  # strong references until each settlement is done


def _settle(coro: Any) -> asyncio.Task[Any]:
    task = asyncio.get_running_loop().create_task(coro)
    _SETTLING.add(task)
    task.add_done_callback(_SETTLING.discard)
    return task


async def _close_and_finish(
    rest: Any, finish: Callable[[Usage, str], Awaitable[None]], last: Usage | None, pieces: int, estimate: int | Callable[[], Awaitable[int]], status: str
) -> Usage:
    """Closes the backend's stream and accounts the answer; returns the usage it was accounted at: the provider's,
    else the prompt's count (``estimate``, counted now if it was not) and one token per piece."""
    usage = last
    try:
        await rest.aclose()
    finally:
        if usage is None:
            try:
                prompt = estimate if isinstance(estimate, int) else await estimate()
            except Exception:  # noqa: BLE001 - an estimate that cannot be made must not lose the accounting
                prompt = 0
            usage = Usage(prompt, pieces)
        await finish(usage, status)
    return usage


def _event(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode("utf-8") + b"\n\n"


async def sse_events(
    answer: StreamAnswer,
    *,
    model: str,
    include_usage: bool,
    prompt_tokens_estimate: int | Callable[[], Awaitable[int]],
    finish: Callable[[Usage, str], Awaitable[None]],
) -> AsyncIterator[bytes]:
    """The stream as the OpenAI SDK expects it; a failure mid-way becomes an ``error`` event, then ``[DONE]``."""
    routing = answer.routing
    base = {"id": routing.request_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model}

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        return _event({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]})

    pieces = 0
    last = Delta()
    status = "cancelled"
    # Events that are ready together go out in one piece (one write to the socket, not one per event): the
    # role with the first content, the text and tool calls of one delta, and the closing events with [DONE].
    # The first piece has arrived already (StreamAnswer.first), so nothing waits for the role event.
    pending = chunk({"role": "assistant", "content": ""})
    try:
        delta: Delta | None = answer.first
        while delta is not None:
            out = pending
            if delta.text:
                pieces += 1
                out += chunk({"content": delta.text})
            if delta.tool_calls:
                pieces += 1
                out += chunk({"tool_calls": delta.tool_calls})
            if delta.finish_reason:
                last = delta
            if out is not pending:
                pending = b""
                yield out
            delta = await anext(answer.rest, None)
        status = "ok"
    except Exception as exc:
        status = "error"
        out, pending = pending, b""
        yield out + _event({"error": {"message": f"the backend failed mid-stream: {exc}", "type": "api_error", "code": "backend_error"}})
    finally:
        if last.energy is not None:
            routing.energy_local = last.energy
        # A client that drops the stream cancels this generator, and the server's cancel scope cancels every
        # await here too: the accounting runs as a task of its own, shielded, so a dropped stream is still
        # counted (the load benchmark lost 4 of 103 before).
        usage = await asyncio.shield(_settle(_close_and_finish(answer.rest, finish, last.usage, pieces, prompt_tokens_estimate, status)))
    tail = pending
    if status == "ok":
        tail += _event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": last.finish_reason or "stop"}], "hybridgate": routing.as_dict()})
        if include_usage:
            tail += _event({**base, "choices": [], "usage": _usage(usage)})
    yield tail + b"data: [DONE]\n\n"
