"""``hybridgate serve --workers 2``: two real worker processes on one port, one Redis, one local model process,
and the stand-in cloud on loopback."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml

from hybridgate.serving.backends.local_llama import default_model_path
from hybridgate.serving.state.base import key_id, today
from hybridgate.testing.stub_upstream import StubBehaviour
from tests.conftest import RedisServer, free_port

LIMIT_USD = 0.12  # per key and day; a stub answer costs 0.015 (10 + 5 tokens at $1 per 1k)
ANSWER_USD = 0.015
AUTH = {"Authorization": "Bearer k1"}


@dataclass
class Served:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    redis_url: str


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYBRIDGATE_") and k not in ("REDIS_URL", "PROMETHEUS_MULTIPROC_DIR")}
    return env | {"HF_HUB_OFFLINE": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}


def _config(tmp: Path, port: int, cloud_base: str, redis_url: str | None) -> Path:
    cfg: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": port, "api_keys": ["k1", "k2"], "log_level": "warning"},
        "local": {"n_ctx": 1024, "default_max_tokens": 8, "n_threads": 1, "max_queue": 8},
        "cloud": {
            "model": "openai/stub-large", "api_base": f"{cloud_base}/v1", "timeout_s": 10, "max_retries": 0,
            "cost_per_1k_prompt_usd": 1.0, "cost_per_1k_completion_usd": 1.0,
        },
        "router": {"scorer": "rules"},  # what is shared here does not depend on the scorer: no embedder to load
        "standin": {"enabled": False},
        "state": {"redis_url": redis_url},
        "budgets": {"per_key_daily_usd": {"k2": LIMIT_USD}},
        "health": {"interval_s": 30},
    }
    path = tmp / "workers.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def served(stub: tuple[str, StubBehaviour]) -> Iterator[Served]:
    tmp = Path(tempfile.mkdtemp(prefix="hybridgate-workers-test-"))
    with RedisServer() as server:
        port = free_port()
        log = tmp / "serve.log"
        cmd = [sys.executable, "-m", "hybridgate.cli", "serve", "--workers", "2", "--config", str(_config(tmp, port, stub[0], server.url()))]
        with log.open("wb") as out:  # its own session: the whole tree (workers, model process) is stopped as one
            proc = subprocess.Popen(cmd, env=_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        s = Served(f"http://127.0.0.1:{port}", proc, log, server.url())
        try:
            deadline = time.monotonic() + 90
            ready: set[str] = set()
            while len(ready) < 2:  # both workers up: each has answered /readyz once
                assert proc.poll() is None, log.read_text()[-3000:]
                try:
                    r = httpx.get(f"{s.url}/readyz", headers=AUTH, timeout=2)
                    if r.status_code == 200:
                        ready.add(r.headers["x-hybridgate-worker"])
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, f"not ready in 90 s: {log.read_text()[-3000:]}"
                time.sleep(0.1)
            yield s
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)


def _chat(url: str, body: dict[str, Any], key: str = "k1") -> httpx.Response:
    # A new connection each time: the kernel hands each to whichever worker accepts it first.
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def _cloud(i: int, key: str = "k1") -> dict[str, Any]:
    return {"model": "hybridgate/cloud", "max_tokens": 5, "messages": [{"role": "user", "content": f"question {i} {key}"}]}


def _requests_counted(metrics_text: str) -> float:
    return sum(float(m) for m in re.findall(r'^hybridgate_requests_total\{[^}]*route="cloud"[^}]*\} (\S+)$', metrics_text, re.M))


def _tree(root: int) -> list[int]:
    """``root`` and every process under it."""
    parents: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parents[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, todo = [root], [root]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parents.items() if pp == p]
        found += kids
        todo += kids
    return found


def _maps_weights(pid: int, model: Path) -> bool:
    try:
        return str(model) in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def test_two_workers_share_one_port_one_model_one_budget_and_sum_their_metrics(served: Served) -> None:
    url = served.url
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: _chat(url, _cloud(i)), range(40)))
    assert [r.status_code for r in answers] == [200] * 40, answers[0].text
    by_worker = Counter(r.headers["x-hybridgate-worker"] for r in answers)
    assert len(by_worker) == 2, by_worker  # the load spread across both workers

    # Any worker's /metrics gives both workers' sum.
    seen: dict[str, float] = {}
    deadline = time.monotonic() + 20
    while len(seen) < 2 and time.monotonic() < deadline:
        r = httpx.get(f"{url}/metrics", headers=AUTH, timeout=5)
        assert r.status_code == 200
        seen[r.headers["x-hybridgate-worker"]] = _requests_counted(r.text)
    assert set(seen) == set(by_worker), seen
    assert set(seen.values()) == {40.0}, seen

    # One process holds the local model's weights; the workers hold its vocabulary only, and answer through it.
    model = default_model_path().resolve()
    holders = [p for p in _tree(served.proc.pid) if _maps_weights(p, model)]
    assert len(holders) == 1, holders
    assert holders[0] not in {int(p) for p in by_worker}
    local = _chat(url, {"model": "hybridgate/local", "max_tokens": 4, "messages": [{"role": "user", "content": "Say hi."}]})
    assert local.status_code == 200, local.text
    assert local.headers["x-hybridgate-route"] == "local"
    assert local.json()["usage"]["completion_tokens"] >= 1
    body = {"model": "hybridgate/local", "max_tokens": 4, "stream": True, "messages": [{"role": "user", "content": "Say hi."}]}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, headers=AUTH, timeout=60) as resp:
        assert resp.status_code == 200
        text = "".join(resp.iter_text())
    assert "data: [DONE]" in text and '"content"' in text
    # The router counts the prompt's tokens in the worker (the vocabulary): a prompt past the context goes to the cloud.
    long = {"model": "hybridgate/auto", "max_tokens": 4, "messages": [{"role": "user", "content": "word " * 1500}]}
    over = _chat(url, long)
    assert over.status_code == 200, over.text
    assert over.headers["x-hybridgate-route"] == "cloud"

    # One budget for the key, whichever worker answers: 8 answers fit, never 8 per worker.
    with ThreadPoolExecutor(4) as pool:
        spent = list(pool.map(lambda i: _chat(url, _cloud(i, "k2"), "k2"), range(24)))
    ok = [r for r in spent if r.status_code == 200]
    refused = [r for r in spent if r.status_code == 429]
    assert len(ok) + len(refused) == len(spent), [r.text for r in spent if r.status_code not in (200, 429)]
    assert 1 <= len(ok) <= round(LIMIT_USD / ANSWER_USD), len(ok)
    assert {r.headers["x-hybridgate-worker"] for r in refused} == set(by_worker)
    assert {r.headers["x-hybridgate-worker"] for r in spent} == set(by_worker)
    client = redis.Redis.from_url(served.redis_url, decode_responses=True)
    usage = client.hgetall(f"hybridgate:usage:{today()}:{key_id('k2')}")
    assert float(usage["cloud_cost_usd"]) == pytest.approx(len(ok) * ANSWER_USD, abs=1e-6), usage


def test_more_than_one_worker_without_redis_is_one_readable_line(stub: tuple[str, StubBehaviour]) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="hybridgate-workers-test-"))
    cmd = [sys.executable, "-m", "hybridgate.cli", "serve", "--workers", "2", "--config", str(_config(tmp, free_port(), stub[0], None))]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --workers 2 needs Redis"), done.stderr


def test_the_shared_model_answers_as_the_in_process_one_over_its_socket(tmp_path: Path) -> None:
    """Every call the gateway makes of its local model, through the model process's wire: the same answer as in
    process (greedy), structured output, the cascade's confidence, logprobs, energy, streaming, and the errors a
    client acts on (a full queue, a prompt too long); token counts from the vocabulary alone match the model's."""
    import asyncio
    import json as _json
    import threading

    import uvicorn

    from hybridgate.serving.backends.base import ChatParams, PromptTooLong, QueueFull
    from hybridgate.serving.backends.local_llama import LlamaBackend
    from hybridgate.serving.backends.local_shared import SharedLlamaBackend
    from hybridgate.serving.local_wire import LoadBoard
    from hybridgate.serving.model_server import create_model_app

    model = LlamaBackend("local", n_ctx=256, n_threads=1, max_queue=0, default_max_tokens=8)
    app = create_model_app(model, LoadBoard(tmp_path / "model.board", create=True))
    server = uvicorn.Server(uvicorn.Config(app, uds=str(tmp_path / "model.sock"), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive()
        time.sleep(0.01)
    shared = SharedLlamaBackend("local", model.path, tmp_path, n_ctx=256, max_queue=0, default_max_tokens=8)
    ask = [{"role": "user", "content": "Name three colours."}]

    async def run() -> None:
        greedy = ChatParams(messages=ask, max_tokens=8, temperature=0.0, logprobs=True, top_logprobs=2)
        await model.complete(greedy)  # the first answer to a prompt differs slightly from the next (prompt cache)
        here, there = await model.complete(greedy), await shared.complete(greedy, confidence=True)
        assert there.text == here.text and there.usage == here.usage
        assert there.confidence is not None and 0 < there.confidence <= 1
        assert there.logprobs is not None and len(there.logprobs["content"][0]["top_logprobs"]) == 2
        assert there.energy is not None and there.energy.joules > 0
        obj = await shared.complete(ChatParams(messages=ask, max_tokens=24, response_format={"type": "json_object"}, temperature=0.0))
        assert obj.text.startswith("{")
        parts = [d async for d in shared.stream(ChatParams(messages=ask, max_tokens=8, temperature=0.0))]
        assert "".join(d.text for d in parts) == here.text and parts[-1].usage == here.usage
        with pytest.raises(PromptTooLong) as too_long:
            await shared.complete(ChatParams(messages=[{"role": "user", "content": "word " * 400}]))
        assert too_long.value.limit == 256 - 16
        with pytest.raises(PromptTooLong):
            async for _ in shared.stream(ChatParams(messages=[{"role": "user", "content": "word " * 400}])):
                pass
        # max_queue 0: while one generates, the next is refused at once, with the time to wait.
        # The board is rewritten every 10 ms, so right after the requests above it may still show one of them:
        # wait until it shows none, or the wait below ends on that stale 1 before the busy answer has begun (it
        # did, 4 runs in 6, and the second request was then served). The busy answer must also last: greedy
        # counting runs to its 64 tokens, where a sampled answer to `ask` may stop after a dozen.
        deadline = time.monotonic() + 10
        while shared.queue_depth > 0:
            assert time.monotonic() < deadline, "the board never showed the model idle"
            await asyncio.sleep(0.005)
        count = [{"role": "user", "content": "Count from 1 to 100, separated by commas."}]
        busy = asyncio.ensure_future(shared.complete(ChatParams(messages=count, max_tokens=64, temperature=0.0)))
        while shared.queue_depth < 1:  # read from the board the model process keeps
            assert time.monotonic() < deadline, "the board never showed the generation"
            await asyncio.sleep(0.005)
        with pytest.raises(QueueFull) as full:
            await shared.complete(ChatParams(messages=ask, max_tokens=4))
        assert full.value.retry_after_s >= 1
        await busy
        await shared.aclose()

    try:
        asyncio.run(run())
        long_text = _json.dumps({"a": "ünïcode " * 20})
        assert shared.count_text_tokens(long_text) == model.count_text_tokens(long_text)
        for messages in (ask, [{"role": "system", "content": "Be brief."}, *ask, {"role": "assistant", "content": "Red."}]):
            assert shared.count_prompt_tokens(messages) == model.count_prompt_tokens(messages)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
