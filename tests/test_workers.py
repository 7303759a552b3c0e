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
from hybridgate.serving.stub_upstream import StubBehaviour
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
