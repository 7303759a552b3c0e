"""Does one heavy request stall the gateway? /healthz latency while each probe of issue 23 (finding 4) runs.

A gateway (``hybridgate serve``, a process of its own, the shipped router and SmolLM2-135M) with a loopback
cloud stub. For each probe this script polls ``/healthz`` every ``--poll-ms`` from a thread while it sends
the probe ``--runs`` times, one after another, and reports the probe's status and time, and /healthz's p50,
p99 and max over the whole probe. The event loop answers /healthz; anything heavy run on it shows up here.

Probes: a 1 MB message to the local model (plain words, and full of personal data); 128 tools with 7.5 KB
descriptions; a ``json_schema`` of 10,000 properties (a new schema each run: the first compile); 2,048
short messages to the local model, to the cloud, and to ``/v1/route`` (the decision alone).

    python bench/stall.py [--runs 3] [--poll-ms 10] [--out bench/results/stall.json]

Target: max <= 50 ms for every probe.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.processes import free_port, start, stop  # noqa: E402

TARGET_MS = 50.0


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def probes() -> list[tuple[str, str, Callable[[int], dict[str, Any]]]]:
    """(name, path, body for run i)."""
    mb_plain = "word " * 200_000
    mb_pii = "mail ada.lovelace@example.org or call +44 20 7946 0958, card 4111 1111 1111 1111. " * 12_000
    tools = [
        {"type": "function", "function": {"name": f"tool_{i}", "description": ("describe the tool " * 420)[:7500],
                                          "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}
        for i in range(128)
    ]
    many = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"short message {i}"} for i in range(2047)] + user("and now?")

    def schema(i: int) -> dict[str, Any]:
        props = {f"p{i}_{k}": {"type": "string"} for k in range(10_000)}
        return {"type": "json_schema", "json_schema": {"name": "big", "schema": {"type": "object", "properties": props}}}

    local = {"model": "hybridgate/local", "max_tokens": 1}
    return [
        ("1 MB message, local", "/v1/chat/completions", lambda i: {**local, "messages": user(mb_plain + str(i))}),
        ("1 MB of personal data, local", "/v1/chat/completions", lambda i: {**local, "messages": user(mb_pii + str(i))}),
        ("128 tools x 7.5 KB, local", "/v1/chat/completions", lambda i: {**local, "messages": user(f"weather {i}?"), "tools": tools}),
        ("json_schema 10,000 properties, local", "/v1/chat/completions", lambda i: {**local, "messages": user("fill it"), "response_format": schema(i)}),
        ("2,048 messages, local", "/v1/chat/completions", lambda i: {**local, "messages": many[:-1] + user(f"and now {i}?")}),
        ("2,048 messages, cloud", "/v1/chat/completions", lambda i: {"model": "hybridgate/cloud", "max_tokens": 4, "messages": many[:-1] + user(f"and now {i}?")}),
        ("2,048 messages, /v1/route", "/v1/route", lambda i: {"model": "hybridgate/auto", "messages": many[:-1] + user(f"and now {i}?")}),
    ]


class Poller:
    """/healthz every ``interval`` seconds on its own thread; latencies in ms."""

    def __init__(self, url: str, interval: float) -> None:
        self.url, self.interval = url, interval
        self.ms: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as c:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                c.get(f"{self.url}/healthz").raise_for_status()
                self.ms.append((time.perf_counter() - t0) * 1000)
                self._stop.wait(self.interval)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--poll-ms", type=float, default=10.0)
    ap.add_argument("--out", type=Path, default=Path("bench/results/stall.json"))
    args = ap.parse_args()

    from hybridgate.testing.server import ServerThread
    from hybridgate.testing.stub_upstream import StubBehaviour, create_stub_app

    stub = ServerThread(create_stub_app(StubBehaviour(keep_bodies=False))).__enter__()
    port = free_port()
    cfg = {
        "server": {"host": "127.0.0.1", "port": port, "max_body_bytes": 8_000_000, "log_level": "warning"},
        "local": {"n_ctx": 2048, "default_max_tokens": 8, "n_threads": 1},
        "cloud": {"model": "openai/stub-large", "api_base": f"{stub.url}/v1", "timeout_s": 30, "max_retries": 0},
        "standin": {"enabled": False},
    }
    cfg_file = Path(tempfile.mkdtemp(prefix="hybridgate-stall-")) / "config.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    url = f"http://127.0.0.1:{port}"
    proc = start([sys.executable, "-m", "hybridgate.cli", "serve", "--config", str(cfg_file)], f"{url}/healthz")
    rows: list[dict[str, Any]] = []
    try:
        with httpx.Client(timeout=300) as c:
            c.post(f"{url}/v1/chat/completions", json={"model": "hybridgate/local", "max_tokens": 1, "messages": user("warm up")})
            with Poller(url, 0.0) as idle:
                time.sleep(2.0)
            rows.append({"probe": "idle (no request)", "status": [], "probe_s": 0.0, **stats(idle.ms)})
            for name, path, body in probes():
                statuses, took = [], 0.0
                with Poller(url, args.poll_ms / 1000) as poll:
                    for i in range(args.runs):
                        t0 = time.perf_counter()
                        statuses.append(c.post(f"{url}{path}", json=body(i)).status_code)
                        took += time.perf_counter() - t0
                rows.append({"probe": name, "status": statuses, "probe_s": round(took / args.runs, 3), **stats(poll.ms)})
    finally:
        stop(proc)
        stub.__exit__(None, None, None)

    table = Table(title=f"/healthz while each probe runs ({args.runs} runs each, polled every {args.poll_ms:g} ms; target max <= {TARGET_MS:g} ms)")
    for col in ("probe", "status", "probe s", "polls", "p50 ms", "p99 ms", "max ms", "ok"):
        table.add_column(col, justify="left" if col == "probe" else "right")
    for r in rows:
        ok = "-" if not r["status"] else ("yes" if r["max_ms"] <= TARGET_MS else "NO")
        table.add_row(r["probe"], ",".join(map(str, r["status"])), f"{r['probe_s']:.2f}", str(r["polls"]), f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}", f"{r['max_ms']:.1f}", ok)
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": platform.platform(), "cpus": os.cpu_count(), "runs": args.runs, "poll_ms": args.poll_ms,
                                    "target_max_ms": TARGET_MS, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


def stats(ms: list[float]) -> dict[str, Any]:
    a = np.asarray(ms or [0.0])
    return {"polls": len(ms), "p50_ms": round(float(np.percentile(a, 50)), 2), "p99_ms": round(float(np.percentile(a, 99)), 2), "max_ms": round(float(a.max()), 2)}


if __name__ == "__main__":
    main()
