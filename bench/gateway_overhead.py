"""How much latency does the gateway add? Measured beside the LiteLLM proxy, in the same run.

Every target fronts the same fixed-reply OpenAI-compatible stub on loopback, so
no model runs on the measured path:

- ``direct``: the stub itself (the limit);
- ``hybridgate default, pinned``: the embedded defaults (``transport: auto``, privacy scan on) with the cloud
  pointed at the stub, ``model: hybridgate/cloud``;
- ``hybridgate default, auto``: the same gateway, ``model: hybridgate/auto`` with a prompt the router sends
  to the cloud (the decision included: embedding, classifier, rules, privacy scan);
- ``hybridgate default, auto 4 KB``: the same with a 4 KB prompt (decision + privacy scan on 4 KB);
- ``hybridgate litellm``: the pinned row through ``transport: litellm``;
- ``litellm proxy``: LiteLLM's proxy with one deployment pointing at the stub;
- with ``--baseline DIR`` (another checkout of hybridgate, e.g. ``git worktree add --detach ../base main``):
  ``baseline default, pinned`` and ``baseline default, auto``, the same default gateway run from that
  checkout's sources in the same run, so a change is compared on the same machine state.

For each: concurrency 1, 16 and 64, N requests each, non-streaming (whole answer)
and streaming (time to first chunk). "added" is the target's p50 minus the
stub's p50 at the same concurrency and mode. Then the local model's decode rate
through the gateway against raw llama-cpp-python, and the resident memory of a
zero-configuration gateway with both models loaded.

    python bench/gateway_overhead.py [--requests 600] [--baseline ../base] [--out bench/results/gateway_overhead-DATE.json]

The machine's load average (``os.getloadavg``) is written down before and after, as the numbers depend on it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import psutil
import yaml
from processes import free_port, start, stop  # noqa: E402 - bench/ is on the path when run as a script
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
PROXY_VENV = ROOT / "bench" / ".venv-litellm-proxy"
PROXY_PIN = "litellm[proxy]==1.106.2"
BODY = {"messages": [{"role": "user", "content": "Say hello in one short sentence."}], "max_tokens": 16}
console = Console(width=150)
KEY = "sk-bench-0123456789abcdef"  # both gateways check a bearer key, as deployed ones would
AUTH = {"Authorization": f"Bearer {KEY}"}










def ensure_proxy_venv() -> Path:
    exe = PROXY_VENV / "bin" / "litellm"
    if not exe.exists():
        console.print(f"creating {PROXY_VENV} with {PROXY_PIN} (once)")
        subprocess.run([sys.executable, "-m", "venv", str(PROXY_VENV)], check=True)
        subprocess.run([str(PROXY_VENV / "bin" / "pip"), "install", "-q", PROXY_PIN], check=True)
    return exe


def tree_cpu_seconds(pid: int) -> float:
    p = psutil.Process(pid)
    total = 0.0
    for q in [p, *p.children(recursive=True)]:
        try:
            t = q.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


@dataclass
class Row:
    target: str
    concurrency: int
    mode: str
    requests: int
    p50_ms: float
    p99_ms: float
    rps: float
    added_p50_ms: float | None = None
    cpu_ms_per_request: float | None = None
    ratio_to_litellm_proxy: float | None = None
    share_of_direct_rps: float | None = None
    transport_errors: int = 0  # attempts retried after the server closed the connection (see load)


async def load(
    url: str, model: str, n: int, concurrency: int, stream: bool, headers: dict[str, str], messages: list[dict[str, str]] | None = None
) -> tuple[list[float], float, int]:
    """n requests, `concurrency` in flight; latency of the whole answer, or of the first content chunk when streaming,
    and how many attempts failed at the transport (a connection the server closed under load): each is retried, up
    to three times, and counted; more than 2 % of the requests failing ends the run."""
    lat: list[float] = []
    errors = 0
    queue = iter(range(n))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60, headers=headers) as client:
        body = {"model": model, **BODY, "stream": stream}
        if messages is not None:
            body["messages"] = messages

        async def once() -> float:
            t0 = time.perf_counter()
            if not stream:
                r = await client.post("/v1/chat/completions", json=body)
                r.raise_for_status()
                return time.perf_counter() - t0
            async with client.stream("POST", "/v1/chat/completions", json=body) as r:
                r.raise_for_status()
                first = None
                async for line in r.aiter_lines():
                    if first is None and '"content":"' in line.replace(": ", ":") and '"content":""' not in line.replace(": ", ":"):
                        first = time.perf_counter() - t0
                return first if first is not None else time.perf_counter() - t0

        async def worker() -> None:
            nonlocal errors
            for _ in queue:
                for attempt in range(4):
                    try:
                        lat.append(await once())
                        break
                    except httpx.TransportError:
                        errors += 1
                        if attempt == 3 or errors > max(3, n // 50):
                            raise

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return lat, wall, errors


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))] * 1000


def gateway_config(tmp: Path, name: str, stub_port: int, transport: str | None) -> Path:
    """The embedded defaults with the cloud at the stub; ``transport`` None leaves it to the default (auto)."""
    path = tmp / f"{name}.yaml"
    cloud: dict[str, object] = {"model": "openai/stub", "api_base": f"http://127.0.0.1:{stub_port}/v1", "max_retries": 0}
    if transport is not None:
        cloud["transport"] = transport
    doc = {
        "server": {"port": free_port(), "log_level": "warning", "api_keys": [KEY]},
        "local": {"n_threads": 1},
        "cloud": cloud,
        "standin": {"enabled": False},
    }
    path.write_text(yaml.safe_dump(doc))
    return path


# Questions a router should send to the cloud; the first the running gateway does send there is used.
HARD = [
    "Prove that there are infinitely many primes p such that p + 2 is also prime, or explain precisely why this is open.",
    "Derive the closed form of the posterior for a Gaussian process regression with a squared-exponential kernel and noisy observations.",
    "Write a lock-free multi-producer multi-consumer queue in C++ with hazard pointers, and prove it is linearizable.",
    "Explain, step by step, how the Gibbs free energy of a reaction relates to its equilibrium constant, with a worked numeric example.",
    "Compare the time complexity of Dijkstra with a Fibonacci heap against A* with a consistent heuristic on grid graphs, and prove both bounds.",
]


def cloud_bound(url: str, prompts: list[str]) -> list[dict[str, str]]:
    """The first prompt that the gateway's router sends to the cloud, as messages (so the auto row measures a
    decision and a cloud call, never the local model)."""
    for text in prompts:
        messages = [{"role": "user", "content": text}]
        d = httpx.post(f"{url}/v1/route", json={"model": "hybridgate/auto", "messages": messages}, headers=AUTH, timeout=30).json()
        if d.get("route") == "cloud":
            return messages
    raise SystemExit("no prompt went to the cloud under the default router: the auto rows cannot be measured")


def four_kb(prompt: str) -> str:
    filler = " Consider every case carefully, state each assumption, and justify each step with a short argument."
    text = prompt
    while len(text.encode()) < 4096:
        text += filler
    return text[:4096]


def baseline_tree(checkout: Path, where: Path) -> Path:
    """Links laid out as the installed package, pointing into ``checkout`` (pyproject's package-dir mapping):
    a process started with it first on PYTHONPATH (and not in a checkout) imports that checkout's code."""
    import tomllib

    mapping: dict[str, str] = tomllib.loads((checkout / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    for package, folder in sorted(mapping.items()):
        link = where.joinpath(*package.split("."))
        if package == "hybridgate":
            link.mkdir(parents=True, exist_ok=True)
            for entry in (checkout / folder).iterdir():
                if entry.name != "__pycache__" and not link.joinpath(entry.name).exists():
                    link.joinpath(entry.name).symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
        elif not link.exists() and not link.parent.is_symlink():
            link.symlink_to((checkout / folder).resolve(), target_is_directory=True)
    return where


def measure_overhead(
    n: int, tmp: Path, procs: dict[str, subprocess.Popen[bytes]], concurrencies: tuple[int, ...], baseline: Path | None = None,
    rounds: int = 1,
) -> tuple[list[Row], dict[str, str]]:
    """Starts the targets into ``procs`` (the caller stops them) and loads each in turn."""
    py = sys.executable
    stub_port = free_port()
    # target -> (process label, url, model, messages)
    urls: dict[str, tuple[str, str, str, dict[str, str], list[dict[str, str]] | None]] = {}
    procs["direct"] = start([py, "-m", "hybridgate.testing.stub_upstream", str(stub_port)], f"http://127.0.0.1:{stub_port}/v1/models")
    urls["direct"] = ("direct", f"http://127.0.0.1:{stub_port}", "stub", {}, None)
    for label, transport in (("hybridgate default", None), ("hybridgate litellm", "litellm")):
        cfg = gateway_config(tmp, label.replace(" ", "-"), stub_port, transport)
        port = yaml.safe_load(cfg.read_text())["server"]["port"]
        procs[label] = start([py, "-m", "hybridgate.cli", "serve", "--config", str(cfg)], f"http://127.0.0.1:{port}/readyz")
    default_url = f"http://127.0.0.1:{yaml.safe_load((tmp / 'hybridgate-default.yaml').read_text())['server']['port']}"
    litellm_url = f"http://127.0.0.1:{yaml.safe_load((tmp / 'hybridgate-litellm.yaml').read_text())['server']['port']}"
    urls["hybridgate default, pinned"] = ("hybridgate default", default_url, "hybridgate/cloud", AUTH, None)
    urls["hybridgate default, auto"] = ("hybridgate default", default_url, "hybridgate/auto", AUTH, cloud_bound(default_url, HARD))
    urls["hybridgate default, auto 4 KB"] = (
        "hybridgate default", default_url, "hybridgate/auto", AUTH, cloud_bound(default_url, [four_kb(p) for p in HARD])
    )
    urls["hybridgate litellm, pinned"] = ("hybridgate litellm", litellm_url, "hybridgate/cloud", AUTH, None)
    if baseline is not None:
        tree = baseline_tree(baseline, tmp / "baseline-tree")
        cfg = gateway_config(tmp, "baseline-default", stub_port, None)
        port = yaml.safe_load(cfg.read_text())["server"]["port"]
        env = {**os.environ, "PYTHONPATH": str(tree)}
        procs["baseline default"] = start(
            [py, "-m", "hybridgate.cli", "serve", "--config", str(cfg)], f"http://127.0.0.1:{port}/readyz", env=env, cwd=str(tmp)
        )
        base_url = f"http://127.0.0.1:{port}"
        urls["baseline default, pinned"] = ("baseline default", base_url, "hybridgate/cloud", AUTH, None)
        urls["baseline default, auto"] = ("baseline default", base_url, "hybridgate/auto", AUTH, cloud_bound(base_url, HARD))
    proxy_port = free_port()
    proxy_cfg = tmp / "litellm.yaml"
    proxy_cfg.write_text(
        yaml.safe_dump(
            {
                "model_list": [
                    {
                        "model_name": "stub",
                        "litellm_params": {"model": "openai/stub", "api_base": f"http://127.0.0.1:{stub_port}/v1", "api_key": "none"},
                    }
                ],
                "litellm_settings": {"telemetry": False, "drop_params": True},
                "general_settings": {"master_key": KEY},
            }
        )
    )
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
    procs["litellm proxy"] = start(
        [str(ensure_proxy_venv()), "--config", str(proxy_cfg), "--port", str(proxy_port), "--host", "127.0.0.1", "--num_workers", "1"],
        f"http://127.0.0.1:{proxy_port}/health/liveliness",
        env=env,
    )
    urls["litellm proxy"] = ("litellm proxy", f"http://127.0.0.1:{proxy_port}", "stub", AUTH, None)

    rows: list[Row] = []
    for stream in (False, True):
        for conc in concurrencies:
            for _, url, model, headers, messages in urls.values():
                asyncio.run(load(url, model, min(200, n), conc, stream, headers, messages))  # warm-up
            # In rounds, each target a share of the requests per round: on a machine whose load changes (shared
            # cores), every target meets the same changes, and the ratios between rows hold.
            got: dict[str, tuple[list[float], float, float, int]] = {t: ([], 0.0, 0.0, 0) for t in urls}
            per_round = [n // rounds + (1 if i < n % rounds else 0) for i in range(rounds)]
            for k in per_round:
                for target, (proc, url, model, headers, messages) in urls.items():
                    cpu0 = tree_cpu_seconds(procs[proc].pid)
                    lat, wall, errors = asyncio.run(load(url, model, k, conc, stream, headers, messages))
                    cpu = tree_cpu_seconds(procs[proc].pid) - cpu0
                    seen, walls, cpus, errs = got[target]
                    got[target] = (seen + lat, walls + wall, cpus + cpu, errs + errors)
            for target, (lat, wall, cpu, errors) in got.items():
                rows.append(
                    Row(target, conc, "stream (first chunk)" if stream else "whole answer", n, pct(lat, 0.5), pct(lat, 0.99), n / wall,
                        cpu_ms_per_request=cpu / n * 1000, transport_errors=errors)
                )
                console.print(f"  {rows[-1].target:30s} c={conc:<3d} {rows[-1].mode:22s} p50 {rows[-1].p50_ms:7.2f} ms  {rows[-1].rps:6.0f} req/s" + (f"  ({errors} retried)" if errors else ""))
    for r in rows:
        base = next(b for b in rows if b.target == "direct" and b.concurrency == r.concurrency and b.mode == r.mode)
        r.added_p50_ms = r.p50_ms - base.p50_ms
        r.share_of_direct_rps = r.rps / base.rps
    for r in rows:
        lp = next(b for b in rows if b.target == "litellm proxy" and b.concurrency == r.concurrency and b.mode == r.mode)
        if r.target.startswith(("hybridgate", "baseline")) and lp.added_p50_ms and lp.added_p50_ms > 0:
            r.ratio_to_litellm_proxy = (r.added_p50_ms or 0) / lp.added_p50_ms
    return rows, {"hybridgate default": default_url}


STORY = [{"role": "user", "content": "Write a long, detailed story about a lighthouse keeper and a storm."}]


def decode_rate_gateway(url: str, runs: int) -> list[float]:
    rates = []
    for _ in range(runs):
        t_first = None
        tokens = 0
        body = {"model": "local", "messages": STORY, "max_tokens": 128, "temperature": 0, "stream": True,
                "stream_options": {"include_usage": True}}
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, headers=AUTH, timeout=120) as r:
            for line in r.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                ev = json.loads(line[6:])
                if ev.get("usage"):
                    tokens = ev["usage"]["completion_tokens"]
                if ev.get("choices") and ev["choices"][0]["delta"].get("content") and t_first is None:
                    t_first = time.perf_counter()
        t_end = time.perf_counter()
        rates.append((tokens - 1) / (t_end - t_first))
    return rates


def decode_rate_raw(runs: int) -> list[float]:
    from llama_cpp import Llama

    from hybridgate.serving.backends.local_llama import LlamaBackend

    backend = LlamaBackend("raw", n_ctx=2048, n_threads=1)
    tokens, stop_words = backend.render(STORY)
    llm: Llama = backend._llm
    rates = []
    for _ in range(runs):
        t_first = None
        n = 0
        for chunk in llm.create_completion(prompt=tokens, max_tokens=128, temperature=0, stream=True, stop=stop_words):
            if chunk["choices"][0]["text"]:
                n += 1
                if t_first is None:
                    t_first = time.perf_counter()
        rates.append((n - 1) / (time.perf_counter() - t_first))
    return rates


def zero_config_memory() -> dict[str, float]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYBRIDGATE_") and k != "REDIS_URL"}
    proc = start([sys.executable, "-m", "hybridgate.cli", "serve", "--port", str(port)], f"http://127.0.0.1:{port}/readyz", env=env)
    try:
        for model in ("hybridgate/local", "hybridgate/cloud"):
            httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json={"model": model, **BODY}, timeout=60).raise_for_status()
        main = psutil.Process(proc.pid)
        kids = main.children(recursive=True)
        gw = main.memory_info().rss / 2**20
        standin = sum(k.memory_info().rss for k in kids) / 2**20
        return {"gateway_rss_mib": round(gw, 1), "standin_rss_mib": round(standin, 1), "total_rss_mib": round(gw + standin, 1)}
    finally:
        stop(proc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=600)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--decode-runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / f"gateway_overhead-{time.strftime('%Y-%m-%d')}.json")
    ap.add_argument("--baseline", type=Path, default=None, help="another checkout, measured in the same run (baseline rows)")
    ap.add_argument("--rounds", type=int, default=1, help="interleave the targets: each gets requests/rounds per round")
    args = ap.parse_args()
    load_before = os.getloadavg()
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

    procs: dict[str, subprocess.Popen[bytes]] = {}
    with tempfile.TemporaryDirectory() as td:
        try:
            console.print(f"[bold]latency added[/bold]: {args.requests} requests per cell")
            rows, urls = measure_overhead(args.requests, Path(td), procs, tuple(args.concurrency), args.baseline, args.rounds)
            load_after = os.getloadavg()
            for label in ("direct", "hybridgate litellm", "litellm proxy", "baseline default"):
                if label not in procs:
                    continue
                stop(procs.pop(label))
            console.print("[bold]decode rate[/bold]: through the gateway, then raw llama-cpp-python")
            via = decode_rate_gateway(urls["hybridgate default"], args.decode_runs)
        finally:
            for p in procs.values():
                stop(p)
        raw = decode_rate_raw(args.decode_runs)
    console.print("[bold]memory[/bold]: zero-configuration gateway with both models")
    mem = zero_config_memory()

    table = Table(title=f"gateway overhead ({args.requests} requests per row, fixed-reply stub on loopback)")
    for col in ("target", "conc", "mode", "p50 ms", "p99 ms", "req/s", "÷ direct req/s", "added p50 ms", "CPU ms/req", "÷ LiteLLM added"):
        table.add_column(col, justify="right" if col not in ("target", "mode") else "left")
    for r in rows:
        table.add_row(
            r.target, str(r.concurrency), r.mode, f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}", f"{r.rps:.0f}",
            "-" if r.share_of_direct_rps is None or r.target == "direct" else f"{r.share_of_direct_rps:.2f}",
            "-" if r.target == "direct" else f"{r.added_p50_ms:.2f}",
            f"{r.cpu_ms_per_request:.2f}",
            "-" if r.ratio_to_litellm_proxy is None else f"{r.ratio_to_litellm_proxy:.2f}",
        )
    console.print(table)
    dec = {
        "gateway_tok_s_median": statistics.median(via),
        "raw_llama_cpp_tok_s_median": statistics.median(raw),
        "ratio": statistics.median(via) / statistics.median(raw),
        "runs": args.decode_runs,
    }
    console.print(
        f"decode rate: gateway {dec['gateway_tok_s_median']:.1f} tok/s, raw llama-cpp-python {dec['raw_llama_cpp_tok_s_median']:.1f} tok/s "
        f"-> {dec['ratio'] * 100:.1f} %"
    )
    console.print(f"resident memory: gateway {mem['gateway_rss_mib']} MiB + stand-in {mem['standin_rss_mib']} MiB = {mem['total_rss_mib']} MiB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
                "requests_per_row": args.requests,
                "load_average_1_5_15": {"before": [round(x, 2) for x in load_before], "after_latency_rows": [round(x, 2) for x in load_after]},
                "baseline": None if args.baseline is None else str(args.baseline),
                "rounds": args.rounds,
                "rows": [asdict(r) for r in rows],
                "decode": dec,
                "memory": mem,
            },
            indent=2,
        )
    )
    console.print(f"load average (1, 5, 15 min): before {load_before}, after the latency rows {load_after}")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
