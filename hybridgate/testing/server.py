"""A real server on a thread, and a gateway configured in front of the stand-in cloud: for tests and benchmarks."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import uvicorn

from hybridgate.serving.config import GatewayConfig, load_config
from hybridgate.serving.gateway import Gateway


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerThread:
    """A uvicorn server on its own thread and event loop, as a real process would run it."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def gateway_config(cloud_base: str | None, **sections: Any) -> GatewayConfig:
    """A small local context, the cloud at ``cloud_base`` (the stub; ``cloud=None`` for none) and no stand-in
    process; keyword arguments are config sections, ``cloud={...}`` merged into the stub's."""
    cloud = sections.pop("cloud", {})
    data: dict[str, Any] = {
        "local": {"n_ctx": 1024, "default_max_tokens": 16},
        "cloud": None
        if cloud is None
        else {"model": "openai/stub-large", "api_base": f"{cloud_base}/v1", "timeout_s": 5, "max_retries": 0, **cloud},
        "standin": {"enabled": False},
        **sections,
    }
    return load_config(None, data)


def drain(gateway: Gateway, timeout_s: float = 60.0) -> None:
    """Wait, from another thread, until the work a served gateway left behind its answers (shadow comparisons)
    is done: what it sends the cloud is then all sent, so a test can look without guessing how long to sleep."""
    assert gateway.loop is not None, "the gateway has not started"
    asyncio.run_coroutine_threadsafe(gateway.drain(), gateway.loop).result(timeout=timeout_s)
