"""How long does the classifier take to decide? Embed + score one query of about 200 tokens.

Each engine (torch, ONNX with 1 and 2 threads) runs the shipped router on the
same query ``--runs`` times after a warm-up, with the query-embedding cache off,
so every run embeds for real; then the whole ``RoutingPolicy.decide`` once more
with the cache on, the path a retried request takes. Prints a table and writes JSON.

    python bench/routing_latency.py [--runs 500] [--out bench/results/routing_latency.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from hybridgate.classifiers.artifact import default_router_path, load_router  # noqa: E402
from hybridgate.classifiers.embedder import CachedEmbedder, Embedder, OnnxEmbedder, TorchEmbedder  # noqa: E402
from hybridgate.router import RouteContext, RouteQuery, RoutingPolicy  # noqa: E402
from hybridgate.router.classifier_scorer import ClassifierScorer  # noqa: E402
from hybridgate.router.decision import Route  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
QUERY = (
    "A 2.0 kg block slides down a frictionless incline of 30 degrees from rest, then crosses a rough horizontal "
    "floor with a coefficient of kinetic friction of 0.25 before it compresses a spring of constant 400 N/m. "
    "The incline is 3.0 m long. Find the speed at the bottom of the incline, the distance travelled on the floor "
    "if the spring were absent, and the maximum compression of the spring when the rough patch is only 1.5 m "
    "long. Explain each step, state which energy terms are conserved and which are dissipated, and say how the "
    "answer would change if the incline had a coefficient of friction of 0.1 as well. Give the final numbers to "
    "two significant figures and check the units of every intermediate result before you combine them."
)


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples)
    return {
        "p50_ms": round(statistics.median(ms), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
    }


def time_scorer(scorer: ClassifierScorer, runs: int) -> list[float]:
    query = RouteQuery(QUERY, 200, 1)
    for _ in range(20):
        scorer.score(query)
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        scorer.score(query)
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=500)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "routing_latency.json")
    args = ap.parse_args()

    model = load_router(default_router_path())
    engines: list[tuple[str, Embedder]] = [
        ("torch, 1 thread", TorchEmbedder(threads=1)),
        ("onnx, 1 thread", OnnxEmbedder(threads=1)),
        ("onnx, 2 threads", OnnxEmbedder(threads=2)),
    ]
    tokens = len(engines[1][1]._tok.encode(QUERY).ids)  # type: ignore[attr-defined]
    rows = []
    reference: np.ndarray | None = None
    for label, emb in engines:
        scorer = ClassifierScorer(model, CachedEmbedder(emb, size=0))
        samples = time_scorer(scorer, args.runs)
        score = scorer.score(RouteQuery(QUERY, 200, 1))
        vec = emb.encode([QUERY])
        reference = vec if reference is None else reference
        rows.append(
            {
                "engine": label,
                **percentiles(samples),
                "score": round(score, 6),
                "max_abs_diff_vs_torch": float(np.abs(vec - reference).max()),
            }
        )
    # The whole decision with the cache on: what a repeated or retried query costs.
    policy = RoutingPolicy(ClassifierScorer(model, CachedEmbedder(engines[1][1], size=1024)), model.default_threshold())
    ctx = RouteContext({"local": Route.LOCAL, "cloud": Route.CLOUD}, frozenset({"local", "cloud"}))
    query = RouteQuery(QUERY, 200, 1)
    policy.decide(query, ctx)
    cached = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        policy.decide(query, ctx)
        cached.append(time.perf_counter() - t0)
    rows.append({"engine": "onnx, cache hit (whole decide)", **percentiles(cached), "score": None, "max_abs_diff_vs_torch": None})

    table = Table(title=f"embed + score one query of {tokens} word pieces, {args.runs} runs, {os.cpu_count()} cores")
    for col in ("engine", "p50", "p99", "mean", "score", "max |diff| vs torch"):
        table.add_column(col, justify="left" if col == "engine" else "right")
    for r in rows:
        diff = r["max_abs_diff_vs_torch"]
        table.add_row(
            r["engine"],
            f"{r['p50_ms']:.2f} ms",
            f"{r['p99_ms']:.2f} ms",
            f"{r['mean_ms']:.2f} ms",
            "" if r["score"] is None else f"{r['score']:.4f}",
            "" if diff is None else f"{diff:.1e}",
        )
    Console(width=140).print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "query_word_pieces": tokens,
        "runs": args.runs,
        "router": {"name": model.name, "version": model.version},
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "processor": platform.processor()},
        "results": rows,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
