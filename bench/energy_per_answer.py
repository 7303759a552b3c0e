"""What an answer costs in energy on this machine, and what the energy rule does with a cap.

A gateway (the real local model, SmolLM2-135M in process; the cloud played by
the loopback stub, priced at the configured joules per token) answers the same
prompts pinned local and pinned cloud, and the figures each answer carries
(``hybridgate.energy``) are summed by side and method. Then the same prompts go
``auto`` under a per-request cap, with a threshold that sends every one of
them to the cloud by score: how many the cap moved, and how many were refused. Prints a table and writes ``bench/results/energy_per_answer.json``.

    python bench/energy_per_answer.py [--answers 20] [--cap 60]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import yaml
from processes import free_port, start, stop  # noqa: E402 - bench/ is on the path when run as a script
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = [
    "Say hello in one short sentence.",
    "Explain, step by step, why the sum of two odd numbers is even.",
    "Write a Python function that returns the n-th Fibonacci number, with a docstring.",
    "List three fruits that are red.",
    "Prove that there are infinitely many primes, in detail.",
]


def ask(url: str, model: str, prompt: str, key: str, max_tokens: int) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "temperature": 0}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=300)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--answers", type=int, default=20, help="answers per side")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--cap", type=float, default=60.0, help="joules per request for the capped key")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "energy_per_answer.json")
    args = ap.parse_args()
    stub_port, port = free_port(), free_port()
    cfg: dict[str, Any] = {
        "server": {"port": port, "api_keys": ["open", "capped"], "log_level": "warning"},
        "standin": {"enabled": False},
        "cloud": {"model": "openai/stub", "api_base": f"http://127.0.0.1:{stub_port}/v1", "transport": "openai", "max_retries": 0},
        "router": {"scorer": "rules", "threshold": 0.0},  # every automatic request scores cloud: the cap decides
        "budgets": {"per_key_max_joules_per_request": {"capped": args.cap}},
    }
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gw.yaml"
        path.write_text(yaml.safe_dump(cfg))
        stub = start([sys.executable, "-m", "hybridgate.testing.stub_upstream", str(stub_port)], f"http://127.0.0.1:{stub_port}/v1/models")
        gw = start([str(Path(sys.executable).parent / "hybridgate"), "serve", "--config", str(path)], f"{url}/healthz")
        try:
            httpx.post(f"http://127.0.0.1:{stub_port}/_control", json={"reply_words": args.max_tokens})
            sides: dict[str, list[dict[str, Any]]] = {"local": [], "cloud": []}
            for i in range(args.answers):
                prompt = PROMPTS[i % len(PROMPTS)]
                for side in sides:
                    r = ask(url, f"hybridgate/{side}", prompt, "open", args.max_tokens).json()
                    e = r["hybridgate"]["energy"][side]
                    sides[side].append({"joules": e["joules"], "method": e["method"], "tokens": r["usage"]["completion_tokens"]})
            outcomes: Counter[str] = Counter()
            reasons: Counter[str] = Counter()
            for i in range(args.answers):
                r = ask(url, "hybridgate/auto", PROMPTS[i % len(PROMPTS)], "capped", args.max_tokens)
                if r.status_code != 200:
                    outcomes[f"refused {r.status_code} {r.json()['error']['code']}"] += 1
                    continue
                decided = r.json()["hybridgate"]["decided"]
                outcomes[decided["route"]] += 1
                reasons.update(x.split(":")[0] for x in decided["reasons"] if x.startswith("energy cap"))
        finally:
            stop(gw)
            stop(stub)
    rows = []
    for side, answers in sides.items():
        joules = [a["joules"] for a in answers]
        tokens = sum(a["tokens"] for a in answers)
        rows.append({
            "side": side, "answers": len(answers), "methods": sorted({a["method"] for a in answers}),
            "joules_mean": round(statistics.mean(joules), 3), "joules_p95": round(sorted(joules)[int(0.95 * (len(joules) - 1))], 3),
            "joules_per_token": round(sum(joules) / max(tokens, 1), 4),
        })
    table = Table(title=f"energy per answer, {args.max_tokens} tokens at most, {args.answers} answers a side")
    for col in ("side", "method", "mean J", "p95 J", "J per answer token"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["side"], ", ".join(r["methods"]), f"{r['joules_mean']:.2f}", f"{r['joules_p95']:.2f}", f"{r['joules_per_token']:.3f}")
    console = Console(width=140)
    console.print(table)
    console.print(f"auto requests under a cap of {args.cap:.0f} J: {dict(outcomes)}; moved by the cap: {sum(reasons.values())}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()}, "sides": rows,
                                    "capped_auto": dict(outcomes), "moved_by_cap": sum(reasons.values())}, indent=2))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
