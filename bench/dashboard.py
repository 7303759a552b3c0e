"""What the dashboard costs the gateway: CPU per page load and per update with 10,000 decisions in history.

A real gateway (the local model loaded, the memory store) is filled with 10,000 decision records shaped as
the gateway logs them and with a full hour and day of sampled history, then each page is loaded as a browser
loads it (the HTML, its script and stylesheet, the page's first JSON) and updated as the page polls (its JSON
again). CPU is this process's CPU time (time.process_time) around requests made in process through httpx's
ASGI transport: it includes the client's own work, so it is an upper bound on the gateway's. Targets: a page
load <= 300 ms of CPU, an update <= 50 ms.

    python bench/dashboard.py [--decisions 10000] [--repeats 30] [--redis-url redis://127.0.0.1:PORT/0] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from hybridgate.serving.app import create_app  # noqa: E402
from hybridgate.serving.build import build_gateway  # noqa: E402
from hybridgate.serving.config import load_config  # noqa: E402
from hybridgate.serving.ui.history import DAY, HOUR  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PAGES = {
    "overview": ["/ui", "/ui/api/overview?window=hour"],
    "overview (day)": ["/ui", "/ui/api/overview?window=day"],
    "decisions": ["/ui/decisions", "/ui/api/decisions?limit=100"],
    "decisions (tenant filter)": ["/ui/decisions", "/ui/api/decisions?limit=100&tenant=tenant-0007"],
    "router": ["/ui/router", "/ui/api/router"],
    "nodes": ["/ui/nodes", "/ui/api/nodes"],
}
ASSETS = ["/ui/static/app.js", "/ui/static/style.css"]


def decision(i: int, now: float, rng: random.Random) -> dict[str, Any]:
    route = rng.choices(["local", "cloud", "collab"], [0.6, 0.3, 0.1])[0]
    score = round(rng.random(), 4)
    return {
        "id": f"chatcmpl-hg-{i:024x}",
        "ts": round(now - (10_000 - i) * 3.0, 3),
        "key": f"tenant-{rng.randrange(40):04d}",
        "status": "ok",
        "prompt_tokens": rng.randrange(5, 800),
        "completion_tokens": rng.randrange(1, 300),
        "latency_ms": round(rng.uniform(20, 4000), 2),
        "user": f"user-{rng.randrange(500)}",
        "route": route,
        "backend": {"local": "local", "cloud": "cloud", "collab": "cloud"}[route],
        "decision_ms": round(rng.uniform(0.2, 3), 3),
        "decided": {
            "route": route, "backend": "local" if route == "local" else "cloud", "score": score, "threshold": 0.5, "t_local": 0.3,
            "mode": "cascade" if route == "collab" else None, "cloud_backend": "cloud", "fallbacks": ["local"], "personal_data": [],
            "private": False, "router": "classifier", "router_version": "9a5c2672013a", "reasons": ["score above t_cloud"],
            "signals": [{"name": "length", "push": 0.1}, {"name": "code", "push": -0.05}, {"name": "math", "push": 0.2}],
        },
        "cost_usd": 0.0 if route == "local" else round(rng.uniform(1e-5, 1e-3), 8),
        "energy": {"local": {"joules": round(rng.uniform(1, 50), 4), "method": "estimated-cpu"}},
    }


async def fill(app: Any, n: int) -> None:
    gateway, dashboard = app.state.gateway, app.state.dashboard
    rng, now = random.Random(0), time.time()
    for i in range(n):
        await gateway.state.log_decision(decision(i, now, rng))
    fields = [f"req|{r}|{r}|ok" for r in ("local", "cloud", "collab")] + ["rej|privacy_strict", "usd|cloud", "tok|local|prompt",
              "tok|local|completion", "tok|cloud|prompt", "tok|cloud|completion", "j|local|local|estimated-cpu", "j|cloud|cloud|estimated"]
    fields += [f"{h}|{r}|{le}" for h in ("lat", "ttft") for r in ("local", "cloud") for le in
               ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0", "30.0", "60.0", "+Inf")]
    ring = dashboard.sampler.redis or dashboard.sampler.memory
    for res in (HOUR, DAY):
        for k in range(res.slots):
            await ring.add(res, res.start_of(now) - k * res.bucket_s, {f: float(rng.randrange(1, 20)) for f in fields})


async def cpu_ms(client: httpx.AsyncClient, paths: list[str]) -> float:
    t0 = time.process_time()
    for p in paths:
        r = await client.get(p)
        assert r.status_code == 200, (p, r.status_code, r.text[:200])
    return (time.process_time() - t0) * 1000


async def run(n: int, repeats: int, redis_url: str | None) -> dict[str, Any]:
    cfg = load_config(None, {
        "standin": {"enabled": False}, "cloud": {"model": "openai/bench", "api_base": "http://127.0.0.1:9/v1"},
        "state": {"redis_url": redis_url},
    })
    gateway = build_gateway(cfg)
    app = create_app(cfg, lambda: gateway)
    rows = []
    async with app.router.lifespan_context(app):
        await fill(app, n)
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            await cpu_ms(client, ["/healthz"])
            base = statistics.median([await cpu_ms(client, ["/healthz"]) for _ in range(repeats)])
            for name, (page, api) in PAGES.items():
                first = await cpu_ms(client, [page, *ASSETS, api])  # cold: nothing of this page read before
                load = [await cpu_ms(client, [page, *ASSETS, api]) for _ in range(repeats)]
                polls = [api]
                if name.startswith("decisions"):  # the page's updates ask only for what is newer than it has,
                    shown = (await client.get(api)).json()  # and for the ratings of its rows without one (all, here)
                    ids = "&".join(f"id={d['id']}" for d in shown["data"])
                    polls = [f"{api}&since={shown['newest_ts']}", f"/ui/api/feedback?{ids}"]
                update = [await cpu_ms(client, polls) for _ in range(repeats)]
                rows.append({
                    "page": name,
                    "first_load_cpu_ms": round(first, 2),
                    "load_cpu_ms_p50": round(statistics.median(load), 2),
                    "load_cpu_ms_max": round(max(load), 2),
                    "update_cpu_ms_p50": round(statistics.median(update), 2),
                    "update_cpu_ms_max": round(max(update), 2),
                })
        degraded = bool(gateway.state.describe().get("degraded"))  # did a dashboard read send the state to its fallback?
    return {
        "decisions_in_history": n,
        "store": "redis" if redis_url else "memory",
        "history_buckets": {"hour": HOUR.slots, "day": DAY.slots},
        "repeats": repeats,
        "healthz_cpu_ms_p50": round(base, 3),
        "targets": {"load_cpu_ms": 300, "update_cpu_ms": 50},
        "pages": rows,
        "meets_targets": all(r["load_cpu_ms_p50"] <= 300 and r["update_cpu_ms_p50"] <= 50 for r in rows),
        "state_degraded_after": degraded,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "command": "python bench/dashboard.py" + (" --redis-url <a private redis-server>" if redis_url else ""),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--decisions", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--redis-url", default=None, help="decision log and history in this Redis (emptied first!) instead of memory")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.redis_url:
        import redis

        redis.Redis.from_url(args.redis_url).flushdb()
    out = args.out or ROOT / "bench" / "results" / ("dashboard_redis.json" if args.redis_url else "dashboard.json")
    result = asyncio.run(run(args.decisions, args.repeats, args.redis_url))
    t = Table(title=f"dashboard CPU, {result['store']} store, {args.decisions} decisions in history (ms of CPU, p50 / max of {args.repeats})")
    for col in ("page", "first load", "page load", "update"):
        t.add_column(col, justify="left" if col == "page" else "right")
    for r in result["pages"]:
        t.add_row(r["page"], str(r["first_load_cpu_ms"]), f"{r['load_cpu_ms_p50']} / {r['load_cpu_ms_max']}", f"{r['update_cpu_ms_p50']} / {r['update_cpu_ms_max']}")
    t.caption = f"targets: load <= 300 ms, update <= 50 ms; /healthz for comparison {result['healthz_cpu_ms_p50']} ms"
    Console().print(t)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
