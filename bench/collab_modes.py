"""What each way of answering costs: local, cloud, and the four collaborative modes, on one prompt set.

The prompts are `bench/prompts/collab.jsonl` (shipped): short factual, long
context, with personal data, hard reasoning. The cloud is the project's
OpenAI-compatible stub on loopback with a fixed delay before it answers
(``--cloud-delay``, 150 ms by default, standing in for the network and a
large model's time to first token); the local model is the real SmolLM2 in the
gateway process. Every request streams (greedy, ``--max-tokens``) through real
HTTP. Per mode: cloud calls, prompt tokens sent to the cloud (the messages the
stub received, counted with the local tokenizer), time to the first
token and to the last; for condense, the share of cloud prompt tokens saved on
the long prompts against sending them whole. Then the router's decision time
with the classifier alone and with every rule on.

    python bench/collab_modes.py [--max-tokens 24] [--out bench/results/collab_modes.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import uvicorn
from processes import free_port  # noqa: E402 - bench/ is on the path when run as a script
from rich.console import Console
from rich.table import Table

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from hybridgate.router import PersonalDataDetector, Route, RouteContext, RouteQuery  # noqa: E402
from hybridgate.serving.app import create_app  # noqa: E402
from hybridgate.serving.build import build_gateway  # noqa: E402
from hybridgate.serving.config import load_config  # noqa: E402
from hybridgate.testing.stub_upstream import StubBehaviour, create_stub_app  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ROOT / "bench" / "prompts" / "collab.jsonl"
MODES = ["local", "cloud", "cascade", "condense", "redact", "draft-refine"]




def serve(app: Any) -> tuple[str, uvicorn.Server]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    return f"http://127.0.0.1:{port}", server


def one(url: str, model: str, prompt: str, max_tokens: int) -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "temperature": 0, "stream": True}
    t0 = time.perf_counter()
    first = None
    info: dict[str, Any] = {}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=300) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line[6:])
            if first is None and any(c["delta"].get("content") for c in event.get("choices", [])):
                first = time.perf_counter() - t0
            info = event.get("hybridgate", info)
    total = time.perf_counter() - t0
    return {"ttft_s": first if first is not None else total, "total_s": total, "hybridgate": info}


def decision_times(gateway: Any, prompts: list[str], runs: int) -> dict[str, dict[str, float]]:
    """The classifier's score alone against the whole pure decision with every rule in play."""
    policy = gateway.policy
    detector = PersonalDataDetector(["Ada Lovelace"])
    ctx = RouteContext(
        backends={"local": Route.LOCAL, "edge": Route.LOCAL, "cloud": Route.CLOUD},
        healthy=frozenset({"local", "edge", "cloud"}),
        local_context_tokens=2000,
        latency_ms={"local": 120.0, "edge": 80.0, "cloud": 400.0},
        overloaded=frozenset({"edge"}),
    )
    out: dict[str, list[float]] = {"classifier alone": [], "classifier + every rule": []}
    for i in range(runs):
        text = prompts[i % len(prompts)] + f" #{i}"  # distinct text: no embedding cache hits
        q0 = RouteQuery(text, 200, 1)
        t0 = time.perf_counter()
        policy.scorer.score(q0)
        out["classifier alone"].append(time.perf_counter() - t0)
        text2 = text + " (again)"
        t0 = time.perf_counter()
        q = RouteQuery(text2, 200, 1, personal_data=detector.kinds([text2]), deadline_ms=150.0)
        policy.decide(q, ctx)
        out["classifier + every rule"].append(time.perf_counter() - t0)
    return {k: {"p50_ms": round(statistics.median(v) * 1000, 3), "p99_ms": round(float(np.percentile(v, 99)) * 1000, 3)} for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--cloud-delay", type=float, default=0.15)
    ap.add_argument("--decision-runs", type=int, default=500)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "collab_modes.json")
    args = ap.parse_args()

    prompts = [json.loads(line) for line in PROMPTS.read_text(encoding="utf-8").splitlines() if line.strip()]
    stub = StubBehaviour(delay_s=args.cloud_delay, reply="The answer, from the large model, is ready here.")
    stub_url, stub_server = serve(create_stub_app(stub))
    cfg = load_config(
        None,
        {
            "local": {"n_ctx": 4096, "default_max_tokens": args.max_tokens},
            "cloud": {"model": "openai/stub-large", "api_base": f"{stub_url}/v1", "transport": "openai", "max_retries": 0},
            "standin": {"enabled": False},
            "privacy": {"names": ["Ada Lovelace"]},
        },
    )
    gateway = build_gateway(cfg)
    url, server = serve(create_app(cfg, lambda: gateway))
    one(url, "hybridgate/local", "Warm up.", 2)

    rows: list[dict[str, Any]] = []
    saved: list[float] = []
    console = Console(width=160)
    for mode in MODES:
        model = f"hybridgate/{mode}"
        calls = tokens = 0
        ttft: list[float] = []
        total: list[float] = []
        for p in prompts:
            before = len(stub.received)
            res = one(url, model, p["prompt"], args.max_tokens)
            # What reached the cloud, counted the same way for every mode: the local tokenizer over the messages.
            sent = stub.received[before:]
            calls += len(sent)
            tokens += sum(gateway.local.count_text_tokens(m["content"]) for b in sent for m in b["messages"])
            ttft.append(res["ttft_s"])
            total.append(res["total_s"])
            collab = res["hybridgate"].get("collaboration") or {}
            if mode == "condense" and p["kind"] == "long" and collab.get("context_tokens"):
                saved.append(1 - collab["kept_tokens"] / collab["context_tokens"])
        rows.append(
            {
                "mode": mode,
                "prompts": len(prompts),
                "cloud_calls": calls,
                "cloud_prompt_tokens": tokens,
                "ttft_p50_ms": round(statistics.median(ttft) * 1000, 1),
                "total_p50_ms": round(statistics.median(total) * 1000, 1),
                "total_mean_ms": round(statistics.fmean(total) * 1000, 1),
            }
        )
        console.print(f"{mode}: done")
    by_mode = {r["mode"]: r for r in rows}
    table = Table(title=f"{len(prompts)} prompts per mode, {args.max_tokens} tokens, cloud stub with {args.cloud_delay * 1000:.0f} ms delay")
    for col in ("mode", "cloud calls", "cloud prompt tokens", "first token p50", "total p50", "total mean"):
        table.add_column(col, justify="left" if col == "mode" else "right")
    for r in rows:
        table.add_row(
            r["mode"], str(r["cloud_calls"]), str(r["cloud_prompt_tokens"]),
            f"{r['ttft_p50_ms']:.0f} ms", f"{r['total_p50_ms']:.0f} ms", f"{r['total_mean_ms']:.0f} ms",
        )
    console.print(table)

    long_prompts = [p["prompt"] for p in prompts if p["kind"] == "long"]
    decisions = decision_times(gateway, [p["prompt"] for p in prompts], args.decision_runs)
    dt = Table(title=f"router decision, {args.decision_runs} runs")
    for col in ("path", "p50", "p99"):
        dt.add_column(col)
    for k, v in decisions.items():
        dt.add_row(k, f"{v['p50_ms']:.3f} ms", f"{v['p99_ms']:.3f} ms")
    console.print(dt)
    condense_saving = round(statistics.fmean(saved), 4) if saved else None
    console.print(f"condense: {condense_saving:.1%} of the context's tokens kept off the cloud on {len(saved)} long prompts" if saved else "condense: no long prompt was condensed")

    result = {
        "prompts": str(PROMPTS.relative_to(ROOT)),
        "max_tokens": args.max_tokens,
        "cloud_delay_s": args.cloud_delay,
        "modes": rows,
        "condense_context_tokens_saved_on_long_prompts": condense_saving,
        "cloud_prompt_tokens_condense_vs_cloud": {
            "cloud": by_mode["cloud"]["cloud_prompt_tokens"],
            "condense": by_mode["condense"]["cloud_prompt_tokens"],
        },
        "long_prompts": len(long_prompts),
        "decision": decisions,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    server.should_exit = True
    stub_server.should_exit = True


if __name__ == "__main__":
    main()
