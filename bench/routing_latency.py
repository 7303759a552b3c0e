"""How long does the classifier take to decide? Embed + score one query of about 200 tokens.

Each engine runs its shipped router on the same query ``--runs`` times after a
warm-up, with the query-embedding cache off, so every run embeds for real:

- ``static``: word-piece vectors distilled from MiniLM, under the default router (``blend-static``: length,
  neighbours among its 1,413 training queries, gated topic correction and rules, with its explanation) and
  under ``mmlu-static``;
- ``torch`` and ``onnx`` with 1 and 2 threads (``mmlu-minilm``): the transformer itself.

Then the whole ``RoutingPolicy.decide`` of the default router, uncached and on
a cache hit (a retried request). Prints a table and writes JSON.

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

from hybridgate.classifiers.artifact import load_router, resolve_router  # noqa: E402
from hybridgate.classifiers.embedder import (  # noqa: E402
    CachedEmbedder,
    Embedder,
    OnnxEmbedder,
    TorchEmbedder,
    load_embedder,
)
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
    "two significant figures and check the units of every intermediate result before you combine them. Finally, "
    "compare the result with a frictionless floor and discuss whether the block can return up the incline."
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

    default_router = load_router(resolve_router(None))
    static_router = load_router(resolve_router("mmlu-static"))
    minilm_router = load_router(resolve_router("mmlu-minilm"))
    static = load_embedder("all-MiniLM-L6-v2-static")
    engines: list[tuple[str, Embedder, object]] = [
        ("static (default router)", static, default_router),
        ("static", static, static_router),
        ("torch, 1 thread", TorchEmbedder(threads=1), minilm_router),
        ("onnx, 1 thread", OnnxEmbedder(threads=1), minilm_router),
        ("onnx, 2 threads", OnnxEmbedder(threads=2), minilm_router),
    ]
    tokens = len(static._model.tokenize([QUERY])[0])  # type: ignore[attr-defined]
    rows = []
    reference: np.ndarray | None = None
    for label, emb, model in engines:
        scorer = ClassifierScorer(model, CachedEmbedder(emb, size=0))  # type: ignore[arg-type]
        samples = time_scorer(scorer, args.runs)
        score = scorer.score(RouteQuery(QUERY, 200, 1))
        diff = None
        if emb.engine != "static":
            vec = emb.encode([QUERY])
            reference = vec if reference is None else reference
            diff = float(np.abs(vec - reference).max())
        rows.append({"engine": label, "router": model.name, **percentiles(samples), "score": round(score, 6), "max_abs_diff_vs_torch": diff})  # type: ignore[attr-defined]
    # The whole decision of the default router, uncached and on a cache hit.
    ctx = RouteContext({"local": Route.LOCAL, "cloud": Route.CLOUD}, frozenset({"local", "cloud"}))
    query = RouteQuery(QUERY, 200, 1)
    for label, size in (("default router, whole decide", 0), ("default router, whole decide, cache hit", 1024)):
        policy = RoutingPolicy(ClassifierScorer(default_router, CachedEmbedder(static, size=size)), default_router.default_threshold())
        for _ in range(20):
            policy.decide(query, ctx)
        samples = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            policy.decide(query, ctx)
            samples.append(time.perf_counter() - t0)
        rows.append({"engine": label, "router": default_router.name, **percentiles(samples), "score": None, "max_abs_diff_vs_torch": None})

    table = Table(title=f"embed + score one query of {tokens} word pieces, {args.runs} runs, {os.cpu_count()} cores")
    for col in ("engine", "router", "p50", "p99", "mean", "score", "max |diff| vs torch"):
        table.add_column(col, justify="left" if col == "engine" else "right")
    for r in rows:
        diff = r["max_abs_diff_vs_torch"]
        table.add_row(
            r["engine"],
            r["router"],
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
        "routers": {m.name: m.version for m in (default_router, static_router, minilm_router)},
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "processor": platform.processor()},
        "results": rows,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
