"""Throughput of ``hybridgate serve --workers N`` at 64 requests in flight, N = 1 and 2.

Every gateway fronts the same fixed-reply OpenAI-compatible stub on loopback (no model on the measured path),
on the embedded defaults (native transport, privacy scan on) with a private Redis as the shared state:

- ``N=1, memory``: one process, state in memory (the single-gateway default), for reference;
- ``N=1, redis``: one process on Redis (what each worker pays for shared state);
- ``N=2, redis``: two workers and the machine's one local-model process.

For each: ``hybridgate/cloud`` (pinned) and ``hybridgate/auto`` with a prompt the router sends to the cloud
(decision and privacy scan included), whole answers. Also the resident memory (PSS, shared pages counted once)
of each gateway's process tree: the local model is in it once, whatever N.

The load generator is one Python process (httpx), on the same cores: on a small machine it, the stub and Redis
take their share, so the figures are what this machine gives, not the gateway's ceiling (docs/workers.md).

    python bench/workers.py [--requests 1500] [--workers 1 2] [--out bench/results/workers-DATE.json]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import psutil
import yaml
from gateway_overhead import AUTH, HARD, KEY, cloud_bound, load, pct, tree_cpu_seconds  # noqa: E402 - bench/ is on the path
from processes import free_port, start, stop  # noqa: E402
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
CONCURRENCY = 64
console = Console(width=150)


@dataclass
class Row:
    setup: str
    workers: int
    state: str
    model: str
    concurrency: int
    requests: int
    p50_ms: float
    p99_ms: float
    rps: float
    cpu_ms_per_request: float
    tree_pss_mib: float
    redis_commands_per_request: float | None = None
    speedup_vs_n1_redis: float | None = None


def tree_pss_mib(pid: int) -> float:
    """Proportional set size of a process and its children: a page shared by k processes counts 1/k in each."""
    total = 0
    root = psutil.Process(pid)
    for p in [root, *root.children(recursive=True)]:
        try:
            for line in Path(f"/proc/{p.pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def start_redis() -> tuple[subprocess.Popen[bytes], str]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    time.sleep(0.3)
    return proc, f"redis://127.0.0.1:{port}/0"


def redis_commands(url: str | None) -> int | None:
    """Commands the Redis has run so far (the load's share: a difference of two readings)."""
    if url is None:
        return None
    import redis

    return int(redis.Redis.from_url(url).info("stats")["total_commands_processed"])


def wait_workers(url: str, workers: int, timeout: float = 120) -> None:
    """Until ``workers`` different processes have answered /readyz (the first answers as soon as it listens)."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while workers > 1 and len(seen) < workers:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(seen)} of {workers} workers ready after {timeout:.0f} s")
        r = httpx.get(f"{url}/readyz", headers=AUTH, timeout=5)
        if r.status_code == 200:
            seen.add(r.headers["x-hybridgate-worker"])
        time.sleep(0.05)


def config(tmp: Path, name: str, stub_port: int, redis_url: str | None) -> tuple[Path, int]:
    """The embedded defaults with the cloud at the stub (as bench/gateway_overhead.py's default row)."""
    port = free_port()
    doc = {
        "server": {"port": port, "log_level": "warning", "api_keys": [KEY]},
        "local": {"n_threads": 1},
        "cloud": {"model": "openai/stub", "api_base": f"http://127.0.0.1:{stub_port}/v1", "max_retries": 0},
        "standin": {"enabled": False},
        "state": {"redis_url": redis_url},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path, port


def measure(setup: str, workers: int, redis_url: str | None, n: int, tmp: Path, stub_port: int) -> list[Row]:
    cfg, port = config(tmp, setup.replace(" ", "").replace(",", "-"), stub_port, redis_url)
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "hybridgate.cli", "serve", "--config", str(cfg), "--workers", str(workers)]
    proc = start(cmd, f"{url}/readyz")
    rows = []
    try:
        wait_workers(url, workers)
        for model, messages in (("hybridgate/cloud", None), ("hybridgate/auto", cloud_bound(url, HARD))):
            asyncio.run(load(url, model, min(300, n), CONCURRENCY, False, AUTH, messages))  # warm-up
            cpu0, cmds0 = tree_cpu_seconds(proc.pid), redis_commands(redis_url)
            lat, wall, _retried = asyncio.run(load(url, model, n, CONCURRENCY, False, AUTH, messages))
            cpu, cmds = tree_cpu_seconds(proc.pid) - cpu0, redis_commands(redis_url)
            row = Row(
                setup, workers, "redis" if redis_url else "memory", model, CONCURRENCY, n, pct(lat, 0.5), pct(lat, 0.99),
                n / wall, cpu / n * 1000, tree_pss_mib(proc.pid), None if cmds is None or cmds0 is None else (cmds - cmds0) / n,
            )
            rows.append(row)
            console.print(f"  {setup:16s} {model:17s} p50 {row.p50_ms:7.1f} ms  {row.rps:6.0f} req/s  {row.cpu_ms_per_request:.2f} CPU ms/req")
    finally:
        stop(proc)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=1500)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / f"workers-{dt.date.today().isoformat()}.json")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="hybridgate-bench-workers-"))
    stub_port = free_port()
    stub = start([sys.executable, "-m", "hybridgate.testing.stub_upstream", str(stub_port)], f"http://127.0.0.1:{stub_port}/v1/models")
    redis_proc, redis_url = start_redis()
    rows: list[Row] = []
    try:
        if 1 in args.workers:
            rows += measure("N=1, memory", 1, None, args.requests, tmp, stub_port)
        for n in args.workers:
            rows += measure(f"N={n}, redis", n, redis_url, args.requests, tmp, stub_port)
    finally:
        stop(stub)
        stop(redis_proc)
    for r in rows:
        base = next((b for b in rows if b.setup == "N=1, redis" and b.model == r.model), None)
        r.speedup_vs_n1_redis = r.rps / base.rps if base else None

    table = Table("setup", "model", "p50 ms", "p99 ms", "req/s", "× N=1 redis", "CPU ms/req", "Redis cmds/req", "tree PSS MiB")
    for r in rows:
        table.add_row(
            r.setup, r.model, f"{r.p50_ms:.1f}", f"{r.p99_ms:.1f}", f"{r.rps:.0f}",
            "" if r.speedup_vs_n1_redis is None else f"{r.speedup_vs_n1_redis:.2f}", f"{r.cpu_ms_per_request:.2f}",
            "" if r.redis_commands_per_request is None else f"{r.redis_commands_per_request:.1f}", f"{r.tree_pss_mib:.0f}",
        )
    console.print(table)
    machine = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "note": "the stub, Redis and the load generator (one httpx process) share the cores with the gateway",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"date": dt.date.today().isoformat(), "machine": machine, "rows": [asdict(r) for r in rows]}, indent=2))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
