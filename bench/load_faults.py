"""Load with faults: a fixed rate of mixed requests over loopback while the cloud and Redis misbehave.

A gateway (the real local model, two keys, prices, Redis state) takes ``--rate`` requests a second for
``--duration`` seconds: local, cloud, auto, cascade, streamed cloud answers, and streams the client drops
after the first chunk. Every minute the loopback cloud stub fails (500), slows past the timeout, and
refuses (400), and the Redis server is killed and started again. At the end, each key's counters (Redis
plus what the gateway kept in memory while Redis was away) are checked against the answers clients got:
the spend counted must equal the spend answered, give or take the streams clients dropped (counted as far
as they went). Prints a table, writes ``bench/results/load_faults.json``. Traffic goes to 127.0.0.1 only.

    python bench/load_faults.py [--duration 600] [--rate 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
ROOT = Path(__file__).resolve().parent.parent

KEYS = ("load-a", "load-b")
KINDS = ("local", "cloud", "auto", "cascade", "stream", "stream-dropped")
# (second of each minute, what happens); the stub and Redis are back to normal at the next entry.
SCHEDULE = ((0, "ok"), (8, "error500"), (14, "ok"), (20, "slow"), (26, "ok"), (32, "reject"), (38, "ok"), (44, "redis-down"), (52, "redis-up"))
MSG = [{"role": "user", "content": "Name one colour of the rainbow."}]


@dataclass
class Tally:
    statuses: dict[str, Counter[int]] = field(default_factory=dict)
    cost: dict[str, float] = field(default_factory=lambda: {k: 0.0 for k in KEYS})
    answered: dict[str, int] = field(default_factory=lambda: {k: 0 for k in KEYS})
    dropped: dict[str, int] = field(default_factory=lambda: {k: 0 for k in KEYS})
    latencies: list[float] = field(default_factory=list)

    def note(self, kind: str, status: int) -> None:
        self.statuses.setdefault(kind, Counter())[status] += 1


async def one(client: Any, url: str, kind: str, key: str, tally: Tally) -> None:
    import httpx

    model = {"local": "hybridgate/local", "auto": "hybridgate/auto", "cascade": "hybridgate/cascade"}.get(kind, "hybridgate/cloud")
    body: dict[str, Any] = {"model": model, "messages": MSG, "max_tokens": 6}
    headers = {"Authorization": f"Bearer {key}"}
    t0 = time.perf_counter()
    try:
        if kind.startswith("stream"):
            body["stream"] = True
            async with client.stream("POST", f"{url}/v1/chat/completions", json=body, headers=headers) as r:
                if r.status_code != 200:
                    await r.aread()
                    tally.note(kind, r.status_code)
                    return
                last: dict[str, Any] = {}
                async for line in r.aiter_lines():
                    if kind == "stream-dropped":
                        tally.dropped[key] += 1
                        tally.note(kind, 299)  # 299: dropped by the client on purpose
                        return  # leaving the block closes the connection mid-stream
                    if line.startswith("data: {"):
                        last = json.loads(line[6:])
                info = last.get("hybridgate") or {}
                tally.cost[key] += float(info.get("cost_usd") or 0.0)
                tally.answered[key] += 1
                tally.note(kind, 200 if "error" not in last else 599)
        else:
            r = await client.post(f"{url}/v1/chat/completions", json=body, headers=headers)
            tally.note(kind, r.status_code)
            if r.status_code == 200:
                tally.cost[key] += float(r.json()["hybridgate"].get("cost_usd") or 0.0)
                tally.answered[key] += 1
        tally.latencies.append(time.perf_counter() - t0)
    except httpx.HTTPError as exc:
        tally.note(kind, 0)
        print(f"transport error on {kind}: {exc!r}", file=sys.stderr)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    from hybridgate.classifiers.embedder import load_embedder
    from hybridgate.serving.app import create_app
    from hybridgate.serving.backends.local_llama import LlamaBackend
    from hybridgate.serving.build import build_gateway
    from hybridgate.serving.state.base import key_id
    from hybridgate.testing.server import ServerThread, free_port, gateway_config
    from hybridgate.testing.stub_upstream import StubBehaviour, create_stub_app

    redis_bin = shutil.which("redis-server")
    if redis_bin is None:
        raise SystemExit("error: redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    # Redis keeps an append-only file, as a deployment would: a restart must not lose the counters, so what
    # is checked below is the gateway's accounting, not a Redis without persistence.
    import tempfile

    data_dir = tempfile.mkdtemp(prefix="hybridgate-load-redis-")
    redis_cmd = [redis_bin, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
                 "--appendfsync", "always", "--dir", data_dir]
    redis_proc = subprocess.Popen(redis_cmd, stdout=subprocess.DEVNULL)
    behaviour = StubBehaviour(keep_bodies=False)
    stub = ServerThread(create_stub_app(behaviour)).__enter__()
    cfg = gateway_config(
        stub.url,
        server={"api_keys": list(KEYS)},
        state={"redis_url": f"redis://127.0.0.1:{port}/0", "reconnect_interval_s": 1.0},
        cloud={"cost_per_1k_prompt_usd": 1.0, "cost_per_1k_completion_usd": 2.0, "timeout_s": 1.5, "max_retries": 0},
        budgets={"default_daily_usd": 10_000.0},
        local={"n_ctx": 1024, "default_max_tokens": 6, "max_queue": 8},
    )
    local = LlamaBackend("local", n_ctx=1024, n_threads=1, max_queue=8, default_max_tokens=6)
    gateway = build_gateway(cfg, local=local, embedder=load_embedder("all-MiniLM-L6-v2-static"))
    srv = ServerThread(create_app(cfg, lambda: gateway)).__enter__()
    tally = Tally()
    events: list[tuple[float, str]] = []
    started = time.monotonic()

    async def faults() -> None:
        nonlocal redis_proc
        while time.monotonic() - started < args.duration:
            second = (time.monotonic() - started) % 60
            state = [what for at, what in SCHEDULE if at <= second][-1]
            if state in ("ok", "error500", "slow", "reject") and behaviour.mode != state:
                behaviour.mode = state
                behaviour.delay_s = 3.0 if state == "slow" else 0.0
                events.append((round(time.monotonic() - started, 1), f"cloud {state}"))
            if state == "redis-down" and redis_proc.poll() is None:
                redis_proc.terminate()
                redis_proc.wait(timeout=10)
                events.append((round(time.monotonic() - started, 1), "redis killed"))
            if state == "redis-up" and redis_proc.poll() is not None:
                redis_proc = subprocess.Popen(redis_cmd, stdout=subprocess.DEVNULL)
                events.append((round(time.monotonic() - started, 1), "redis started"))
            await asyncio.sleep(0.2)
        behaviour.mode, behaviour.delay_s = "ok", 0.0
        if redis_proc.poll() is not None:
            redis_proc = subprocess.Popen(redis_cmd, stdout=subprocess.DEVNULL)

    tasks: set[asyncio.Task[None]] = set()
    fault_task = asyncio.create_task(faults())
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=64)) as client:
        n = 0
        while time.monotonic() - started < args.duration:
            kind, key = KINDS[n % len(KINDS)], KEYS[(n // len(KINDS)) % len(KEYS)]
            t = asyncio.create_task(one(client, srv.url, kind, key, tally))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
            n += 1
            await asyncio.sleep(max(0.0, started + n / args.rate - time.monotonic()))
        await asyncio.gather(*list(tasks))
    await fault_task
    await asyncio.sleep(2.0)  # let dropped streams finish their accounting; Redis back
    import redis as redis_sync

    from hybridgate.serving.state.base import today

    # Redis read with a client of our own (the gateway's belongs to its event loop); the memory fallback is
    # plain data and read directly.
    r = redis_sync.Redis(host="127.0.0.1", port=port)
    for _ in range(50):
        try:
            r.ping()
            break
        except redis_sync.ConnectionError:
            time.sleep(0.1)
    counted: dict[str, dict[str, float]] = {}
    for key in KEYS:
        kid = key_id(key)
        h = {k.decode(): float(v) for k, v in r.hgetall(f"hybridgate:usage:{today()}:{kid}").items()}
        in_memory = await gateway.state.fallback.usage_today(kid)  # type: ignore[attr-defined]
        counted[key] = {
            "requests": int(h.get("requests", 0)) + in_memory.requests,
            "cost_usd": round(h.get("cloud_cost_usd", 0.0) + in_memory.cloud_cost_usd, 6),
            "cost_usd_in_redis": round(h.get("cloud_cost_usd", 0.0), 6),
            "cost_usd_in_memory_while_redis_was_down": round(in_memory.cloud_cost_usd, 6),
            "reserved_usd_left_in_redis": round(h.get("reserved_usd", 0.0), 6),
        }
    srv.__exit__(None, None, None)
    stub.__exit__(None, None, None)
    redis_proc.terminate()
    redis_proc.wait(timeout=10)
    shutil.rmtree(data_dir, ignore_errors=True)
    lat = sorted(tally.latencies)
    return {
        "duration_s": args.duration,
        "rate_per_s": args.rate,
        "requests_sent": sum(sum(c.values()) for c in tally.statuses.values()),
        "statuses": {k: {str(code): n for code, n in sorted(v.items())} for k, v in tally.statuses.items()},
        "latency_p50_s": round(lat[len(lat) // 2], 3) if lat else None,
        "latency_p99_s": round(lat[int(len(lat) * 0.99)], 3) if lat else None,
        "answered": tally.answered,
        "dropped_streams": tally.dropped,
        "answered_cost_usd": {k: round(v, 6) for k, v in tally.cost.items()},
        "counted": counted,
        "faults": events,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=600.0)
    ap.add_argument("--rate", type=float, default=4.0, help="requests a second")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "load_faults.json")
    args = ap.parse_args()
    result = asyncio.run(run(args))
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{result['requests_sent']} requests in {args.duration:.0f} s at {args.rate}/s, with faults (status 0: transport error, 299: dropped by the client)")
    t.add_column("kind")
    t.add_column("responses by status")
    for kind, counts in result["statuses"].items():
        t.add_row(kind, ", ".join(f"{code}: {n}" for code, n in counts.items()))
    Console(width=150).print(t)
    a = Table(title="spend answered against spend counted, per key")
    for col in ("key", "answered", "dropped streams", "answered USD", "counted USD (Redis + memory)", "counted requests", "difference USD"):
        a.add_column(col)
    ok = True
    for key in KEYS:
        answered, counted = result["answered_cost_usd"][key], result["counted"][key]
        diff = counted["cost_usd"] - answered
        # Each dropped stream is counted as far as it went, its prompt estimated by the local tokenizer (at most
        # one cloud answer of 6 tokens: 0.05 USD at these prices).
        ok &= -1e-6 <= diff <= 0.05 * result["dropped_streams"][key] + 1e-6
        # Every answer the client got, and every stream it dropped, is counted once: no more, no fewer.
        ok &= counted["requests"] == result["answered"][key] + result["dropped_streams"][key]
        a.add_row(key, str(result["answered"][key]), str(result["dropped_streams"][key]), f"{answered:.4f}", f"{counted['cost_usd']:.4f}",
                  str(counted["requests"]), f"{diff:+.4f}")
    Console(width=150).print(a)
    result["accounting_consistent"] = bool(ok)
    print(f"latency p50 {result['latency_p50_s']} s, p99 {result['latency_p99_s']} s; accounting consistent: {ok}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
