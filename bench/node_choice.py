"""Which edge node should answer? Latency-only choice against fixed and learnt node weights, in the same run.

Three OpenAI-compatible stubs on loopback play edge nodes (``hybridgate/testing/stub_upstream.py``):

- ``edge-a`` answers its first token soonest (2 ms network, 5 ms to the first
  token, 6 ms a token) but is shared: other users' requests load it in some
  phases, and every request it serves slows every other;
- ``edge-b`` is far (25 ms network, 30 ms to the first token) and quick to
  generate (5 ms a token);
- ``edge-c`` is near and slow (8 ms, 15 ms, 12 ms a token).

The other users' load changes every ``--phase`` requests (edge-a overloaded,
then edge-b, then edge-a again, then edge-c), and each node reports its
running requests on ``/metrics`` (``stub_requests_running``), as llama.cpp and
vLLM servers do. The three nodes are one route of the gateway (declared
``route: cloud`` so the in-process model stays out of the comparison; the
choice within a route is the same code for either route). The same stream of
requests (streamed answers of 24 words, ``--concurrency`` at a time) goes
through a fresh gateway under each choice:

- ``latency``: the moving estimate of each node's first-token time alone (the
  choice before node weights);
- ``fixed weights``: W = W_cpu + W_ai + W_nl with the documented defaults;
- ``learnt weights``: the same parts, weights fitted online on the gateway.

It prints p50/p95/p99 of the total time per answer, each node's share, and the
learnt weights, and writes ``bench/results/node_choice.json``.

    python bench/node_choice.py [--requests 800] [--phase 200] [--concurrency 6]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml
from processes import free_port, start, stop  # noqa: E402 - bench/ is on the path when run as a script
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
console = Console(width=150)
NODES: dict[str, dict[str, float]] = {
    "edge-a": {"network_s": 0.002, "first_token_s": 0.005, "ms_per_token": 6.0},
    "edge-b": {"network_s": 0.025, "first_token_s": 0.030, "ms_per_token": 5.0},
    "edge-c": {"network_s": 0.008, "first_token_s": 0.015, "ms_per_token": 12.0},
}
PHASES: list[dict[str, float]] = [  # other users' requests on each node
    {"edge-a": 6, "edge-b": 0, "edge-c": 0},
    {"edge-a": 0, "edge-b": 6, "edge-c": 1},
    {"edge-a": 6, "edge-b": 2, "edge-c": 0},
    {"edge-a": 1, "edge-b": 0, "edge-c": 4},
]
CHOICES: dict[str, dict[str, Any]] = {
    "latency": {"choice": "latency"},
    "fixed weights": {"choice": "weighted", "learn": False},
    "learnt weights": {"choice": "weighted", "learn": True},
}
WORDS = 24










def set_phase(stubs: dict[str, str], phase: dict[str, float]) -> None:
    for name, url in stubs.items():
        httpx.post(f"{url}/_control", json={**NODES[name], "external_load": phase[name], "reply_words": WORDS}, timeout=5)


async def one(client: httpx.AsyncClient, url: str) -> tuple[float, str]:
    body = {"model": "hybridgate/cloud", "stream": True, "max_tokens": 32, "messages": [{"role": "user", "content": "Tell me something."}]}
    started = time.perf_counter()
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"status {r.status_code}: {(await r.aread())[:300]!r}")
        backend = r.headers.get("x-hybridgate-backend", "?")
        async for _ in r.aiter_lines():
            pass
    return (time.perf_counter() - started) * 1000.0, backend


async def workload(url: str, stubs: dict[str, str], requests: int, phase_len: int, concurrency: int) -> list[tuple[float, str]]:
    results: list[tuple[float, str]] = []
    sent = 0
    loop = asyncio.get_running_loop()

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal sent
        while sent < requests:
            i = sent
            sent += 1
            if i and i % phase_len == 0:  # the other users' load moves; the same for every choice
                await loop.run_in_executor(None, set_phase, stubs, PHASES[(i // phase_len) % len(PHASES)])
            results.append(await one(client, url))

    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=concurrency)) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return results


def run_choice(name: str, nodes_cfg: dict[str, Any], stubs: dict[str, str], args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    set_phase(stubs, PHASES[0])
    port = free_port()
    cfg = {
        "server": {"port": port, "log_level": "warning"},
        "standin": {"enabled": False},
        "cloud": None,
        "router": {"scorer": "rules"},
        "local": {"n_ctx": 512},
        "health": {"interval_s": 0.25, "timeout_s": 2},
        "nodes": {**nodes_cfg, "expected_tokens": 32},
        "edge_nodes": [
            {"name": n, "model": "openai/edge", "route": "cloud", "api_base": f"{u}/v1", "transport": "openai", "max_retries": 0,
             "timeout_s": 60, "load_metrics": ["stub_requests_running"]}
            for n, u in stubs.items()
        ],
    }
    path = tmp / f"{name.replace(' ', '-')}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    url = f"http://127.0.0.1:{port}"
    gw = start([str(Path(sys.executable).parent / "hybridgate"), "serve", "--config", str(path)], f"{url}/readyz")
    try:
        time.sleep(1.0)  # a few probes: every node's round trip and load are known before the first request
        started = time.perf_counter()
        results = asyncio.run(workload(url, stubs, args.requests, args.phase, args.concurrency))
        wall = time.perf_counter() - started
        state = httpx.get(f"{url}/v1/hybridgate/nodes", timeout=10).json()
    finally:
        stop(gw)
    ms = np.array([r[0] for r in results])
    share = Counter(r[1] for r in results)
    return {
        "choice": name,
        "requests": len(results),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p95_ms": round(float(np.percentile(ms, 95)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "mean_ms": round(float(ms.mean()), 1),
        "wall_s": round(wall, 1),
        "share": {n: round(share.get(n, 0) / len(results), 3) for n in NODES},
        "weights": state.get("weights"),
        "answers_learnt": state.get("answers_learnt"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=800, help="requests per choice")
    ap.add_argument("--phase", type=int, default=200, help="requests between changes of the other users' load")
    ap.add_argument("--concurrency", type=int, default=6)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "node_choice.json")
    args = ap.parse_args()
    stub_procs, stubs = [], {}
    try:
        for name in NODES:
            port = free_port()
            stubs[name] = f"http://127.0.0.1:{port}"
            stub_procs.append(start([sys.executable, "-m", "hybridgate.testing.stub_upstream", str(port)], f"{stubs[name]}/v1/models"))
        with tempfile.TemporaryDirectory(prefix="hybridgate-nodes-") as tmp:
            rows = []
            for name, nodes_cfg in CHOICES.items():
                console.print(f"[bold]{name}[/]: {args.requests} requests, {args.concurrency} at a time")
                rows.append(run_choice(name, nodes_cfg, stubs, args, Path(tmp)))
    finally:
        for p in stub_procs:
            stop(p)
    base = rows[0]
    for r in rows:
        r["p95_vs_latency"] = round(r["p95_ms"] / base["p95_ms"], 3)
        r["p50_vs_latency"] = round(r["p50_ms"] / base["p50_ms"], 3)
    table = Table(title="Node choice: total time per streamed answer (ms)")
    for col in ("choice", "p50", "p95", "p99", "p95 / latency-only", "edge-a · b · c", "weights (intercept, cpu, ai, nl)"):
        table.add_column(col)
    for r in rows:
        w = r["weights"] or {}
        table.add_row(
            r["choice"], f"{r['p50_ms']:.0f}", f"{r['p95_ms']:.0f}", f"{r['p99_ms']:.0f}", f"{r['p95_vs_latency']:.2f}",
            " · ".join(f"{r['share'][n]:.0%}" for n in NODES),
            "—" if r["choice"] == "latency" else f"{w.get('intercept_ms')}, {w.get('cpu')}, {w.get('ai')}, {w.get('nl')}",
        )
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"nodes": NODES, "phases": PHASES, "words": WORDS, "settings": vars(args) | {"out": str(args.out)}, "rows": rows}, indent=2))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
