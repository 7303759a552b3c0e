"""What the machine's one local model and the gateway workers say to each other (``serve --workers N``).

The workers of one machine share one loaded model (serving/model_server.py) instead of loading it N times.
They talk over a Unix socket in the gateway's own terms (``ChatParams`` in, ``Completion``/``Delta`` out),
not OpenAI's wire, so nothing the in-process model gives is lost on the way: the cascade's confidence,
measured energy, logprobs, tool calls, and the exact errors (a full queue with its retry time, a prompt too
long with its token counts). The model's queue depth is read from a small shared-memory board that the
model process rewrites every few milliseconds, because the router reads it synchronously on every decision.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hybridgate.serving.backends.base import (
    BackendError,
    ChatParams,
    Completion,
    Delta,
    PromptTooLong,
    QueueFull,
    Usage,
)
from hybridgate.serving.energy import Energy
from hybridgate.serving.structured import StructuredOutputError

_BOARD = struct.Struct("<qd")  # requests running or waiting, the expected wait of a new one (s)


class LoadBoard:
    """The local model's queue on one page of shared memory: one writer (the model process), many readers."""

    def __init__(self, path: str | Path, *, create: bool = False) -> None:
        self.path = Path(path)
        flags = os.O_RDWR | (os.O_CREAT if create else 0)
        fd = os.open(self.path, flags, 0o600)
        try:
            if create:
                os.ftruncate(fd, mmap.PAGESIZE)
            self._map = mmap.mmap(fd, mmap.PAGESIZE)
        finally:
            os.close(fd)

    def write(self, queue_depth: int, expected_wait_s: float) -> None:
        _BOARD.pack_into(self._map, 0, queue_depth, expected_wait_s)

    def read(self) -> tuple[int, float]:
        depth, wait = _BOARD.unpack_from(self._map, 0)
        return int(depth), float(wait)

    def close(self) -> None:
        self._map.close()


def params_to_wire(params: ChatParams) -> dict[str, Any]:
    return asdict(params)


def params_from_wire(data: dict[str, Any]) -> ChatParams:
    return ChatParams(**data)


def _energy(data: dict[str, Any] | None) -> Energy | None:
    return None if data is None else Energy(float(data["joules"]), str(data["method"]))


def completion_to_wire(c: Completion) -> dict[str, Any]:
    return asdict(c)  # nested dataclasses (usage, energy, alternatives) become plain dicts


def completion_from_wire(data: dict[str, Any]) -> Completion:
    return Completion(
        text=data["text"],
        finish_reason=data["finish_reason"],
        usage=Usage(**data["usage"]),
        model=data["model"],
        confidence=data.get("confidence"),
        tool_calls=data.get("tool_calls"),
        logprobs=data.get("logprobs"),
        alternatives=tuple(completion_from_wire(a) for a in data.get("alternatives") or ()),
        energy=_energy(data.get("energy")),
    )


def delta_to_wire(d: Delta) -> dict[str, Any]:
    return asdict(d)


def delta_from_wire(data: dict[str, Any]) -> Delta:
    usage = data.get("usage")
    return Delta(
        text=data.get("text") or "",
        finish_reason=data.get("finish_reason"),
        usage=None if usage is None else Usage(**usage),
        tool_calls=data.get("tool_calls"),
        energy=_energy(data.get("energy")),
    )


def error_to_wire(exc: Exception) -> tuple[int, dict[str, Any]]:
    """A failure of the model process as a status and a body the worker turns back into the same exception."""
    if isinstance(exc, QueueFull):
        return 503, {"kind": "queue_full", "retry_after_s": exc.retry_after_s}
    if isinstance(exc, PromptTooLong):
        return 400, {"kind": "prompt_too_long", "prompt_tokens": exc.prompt_tokens, "limit": exc.limit}
    if isinstance(exc, StructuredOutputError):
        return 400, {"kind": "structured_output", "message": str(exc)}
    return 500, {"kind": "error", "message": f"{type(exc).__name__}: {exc}"}


def error_from_wire(backend: str, body: dict[str, Any]) -> Exception:
    kind = body.get("kind")
    if kind == "queue_full":
        return QueueFull(backend, int(body["retry_after_s"]))
    if kind == "prompt_too_long":
        return PromptTooLong(backend, int(body["prompt_tokens"]), int(body["limit"]))
    if kind == "structured_output":
        return StructuredOutputError(str(body["message"]))
    return BackendError(f"the shared local model failed: {body.get('message', body)}", backend=backend)
