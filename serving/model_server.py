"""The machine's one local model, served to the gateway workers of ``hybridgate serve --workers N``.

N workers each loading the model would hold N copies of its weights and run N generations at once on cores
that the workers themselves need; one process keeps one copy, one queue (``local.max_queue`` counts for the
whole machine, as with a single gateway) and the model's own thread. It listens on a Unix socket that only
this machine's workers reach, and speaks serving/local_wire.py. It dies with its parent (the supervisor).

Run by the supervisor as ``python -m hybridgate.serving.model_server RUN_DIR``: ``RUN_DIR/config.json`` is
the gateway's resolved configuration, and it creates ``RUN_DIR/model.sock`` and ``RUN_DIR/model.board``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from hybridgate.serving.backends.local_llama import LlamaBackend
from hybridgate.serving.local_wire import (
    LoadBoard,
    completion_to_wire,
    delta_to_wire,
    error_to_wire,
    params_from_wire,
)

BOARD_INTERVAL_S = 0.01  # how stale the workers' view of the queue may be
DISCONNECT_POLL_S = 0.2  # how long a generation may outlive the worker that asked for it


def create_model_app(backend: LlamaBackend, board: LoadBoard) -> Starlette:
    """``/complete`` answers whole; ``/stream`` answers one JSON delta a line, the first only once generation
    has started, so that a refusal (a full queue, a prompt too long) is still a status the worker can map."""

    async def publish() -> None:
        while True:
            board.write(backend.queue_depth, backend.expected_wait_s)
            await asyncio.sleep(BOARD_INTERVAL_S)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(publish())
        try:
            yield
        finally:
            task.cancel()
            await backend.aclose()

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok", "model": backend.model_id, "load_seconds": round(backend.load_seconds, 2)})

    async def complete(request: Request) -> Response:
        body = await request.json()
        task = asyncio.ensure_future(backend.complete(params_from_wire(body["params"]), confidence=bool(body.get("confidence"))))
        # A worker whose client gave up hangs up: the generation stops, as it does in process (the backend's cancel).
        while not (await asyncio.wait({task}, timeout=DISCONNECT_POLL_S))[0]:
            if await request.is_disconnected():
                task.cancel()
                return Response(status_code=499)
        try:
            done = task.result()
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the worker, mapped
            status, err = error_to_wire(exc)
            return JSONResponse(err, status_code=status)
        return JSONResponse(completion_to_wire(done))

    async def stream(request: Request) -> Response:
        body = await request.json()
        deltas = backend.stream(params_from_wire(body["params"])).__aiter__()
        try:
            first = await deltas.__anext__()
        except StopAsyncIteration:
            return StreamingResponse(iter(()), media_type="application/x-ndjson")
        except Exception as exc:  # noqa: BLE001
            status, err = error_to_wire(exc)
            return JSONResponse(err, status_code=status)

        async def lines() -> AsyncIterator[bytes]:
            try:
                yield json.dumps(delta_to_wire(first)).encode() + b"\n"
                async for d in deltas:
                    yield json.dumps(delta_to_wire(d)).encode() + b"\n"
            except Exception as exc:  # noqa: BLE001 - the status is sent: the error travels as the last line
                yield json.dumps({"error": error_to_wire(exc)[1]}).encode() + b"\n"
            finally:
                await deltas.aclose()  # a worker that hung up stops the generation (the backend's cancel flag)

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/complete", complete, methods=["POST"]),
        Route("/stream", stream, methods=["POST"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def main(run_dir: str) -> None:
    import uvicorn

    from hybridgate.serving.build import load_local
    from hybridgate.serving.config import GatewayConfig

    folder = Path(run_dir)
    cfg = GatewayConfig.model_validate(json.loads((folder / "config.json").read_text(encoding="utf-8")))
    logging.basicConfig(level=cfg.server.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    backend = load_local(cfg)
    board = LoadBoard(folder / "model.board", create=True)
    app = create_model_app(backend, board)
    uvicorn.run(app, uds=str(folder / "model.sock"), log_level="warning", access_log=False)


if __name__ == "__main__":
    main(sys.argv[1])
