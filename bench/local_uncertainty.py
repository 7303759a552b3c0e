"""Does the on-device model's own uncertainty about a query say where the cloud is needed, and what does it cost?

For every train-split question of the routing benchmark and a fixed sample of
its test split (by prompt sha256), SmolLM2-135M-Instruct reads the query once,
prefill only, inside its chat template, and gives two numbers: the mean
negative log-likelihood of the query's tokens (how strange the query is to it)
and the entropy of its first answer token (how unsure it is how to start). Each
is scored as a router on its own (it needs no training, so its transfer figure
is just its APGR on each fold's sampled test rows), and beside the default
router, combined with it by a logistic regression fitted on the train rows of
the other subjects (the transfer protocol). The cost is measured per prompt
length. Prints a table, writes ``bench/results/local_uncertainty.json``.

    python bench/local_uncertainty.py [--sample 1500] [--data ../shared/data/routellm-mmlu/responses]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mmlu import add_data_options, load  # noqa: E402 - bench/ is on the path when run as a script

from hybridgate.classifiers.artifact import load_router, resolve_router  # noqa: E402
from hybridgate.classifiers.embedder import load_embedder  # noqa: E402
from hybridgate.classifiers.protocols import FOLDS, Bench  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = "<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"


def read_query(llm: object, text: str, max_tokens: int) -> tuple[float, float, int, float]:
    """(mean NLL of the query's tokens, entropy of the first answer token, tokens read, seconds)."""
    started = time.perf_counter()
    tokens = llm.tokenize(TEMPLATE.format(q=text).encode("utf-8"), add_bos=True, special=True)  # type: ignore[attr-defined]
    tokens = tokens[-max_tokens:]
    llm.reset()  # type: ignore[attr-defined]
    llm.eval(tokens)  # type: ignore[attr-defined]
    logits = np.asarray(llm.scores[: len(tokens)], dtype=np.float64)  # type: ignore[attr-defined]
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    nll = float(-logp[np.arange(len(tokens) - 1), tokens[1:]].mean())
    last = np.exp(logp[-1])
    entropy = float(-(last * logp[-1]).sum())
    return nll, entropy, len(tokens), time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_options(ap)
    ap.add_argument("--sample", type=int, default=1500, help="test-split questions to read (all train-split ones are read)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "local_uncertainty.json")
    args = ap.parse_args()
    if not args.data.exists():
        raise SystemExit(f"error: {args.data} not found (the routing benchmark lives in ../shared/data)")

    from llama_cpp import Llama
    from rich.progress import track
    from sklearn.linear_model import LogisticRegression

    from hybridgate.serving.backends.local_llama import default_model_path

    data = load(args)
    bench = Bench(data)
    test_idx = np.nonzero(~bench.train)[0]
    test_idx = test_idx[np.argsort([bench.sha[i] for i in test_idx])][: args.sample]
    rows = np.sort(np.concatenate([np.nonzero(bench.train)[0], test_idx]))
    llm = Llama(str(default_model_path()), n_ctx=1024, n_threads=args.threads, logits_all=True, verbose=False)
    nll, ent, ntok, secs = (np.zeros(len(data)) for _ in range(4))
    for i in track(rows, description=f"SmolLM2 reads {len(rows)} queries"):
        nll[i], ent[i], ntok[i], secs[i] = read_query(llm, data.prompts[i], 1000)

    emb = load_embedder("all-MiniLM-L6-v2-static")
    router = load_router(resolve_router(None), embedder=emb.name, dim=emb.dim)
    base = np.zeros(len(data))
    base[rows] = router.score(emb.encode([data.prompts[i] for i in rows]), [data.prompts[i] for i in rows])
    base_logit = np.log(np.clip(base, 1e-4, 1 - 1e-4) / np.clip(1 - base, 1e-4, 1))
    sampled = np.zeros(len(data), dtype=bool)
    sampled[test_idx] = True

    def combined(train_rows: np.ndarray) -> np.ndarray:
        x = np.column_stack([base_logit, nll, ent])
        mu, sd = x[train_rows].mean(axis=0), x[train_rows].std(axis=0) + 1e-9
        gain01 = (data.strong.astype(float) - data.weak.astype(float) + 1) / 2
        y = (gain01[train_rows] > 0.5).astype(int)
        m = LogisticRegression(C=1.0).fit((x[train_rows] - mu) / sd, y)
        return m.decision_function((x - mu) / sd)

    signals = {
        "default router (shape-static)": lambda tr: base,
        "local model: query NLL": lambda tr: nll,
        "local model: first-token entropy": lambda tr: ent,
        "local model: -query NLL": lambda tr: -nll,
        "default router + local model (logistic)": combined,
    }
    results = []
    for name, make in signals.items():
        ind = bench.curve(make(bench.train)[sampled], sampled).apgr
        folds = []
        for k in range(FOLDS):
            tr, _ = bench.fold_masks(k)
            te = sampled & (bench.fold == k)
            folds.append(bench.curve(make(tr)[te], te).apgr)
        results.append({"signal": name, "in_distribution_apgr": round(ind, 4), "transfer_apgr": round(float(np.mean(folds)), 4),
                        "folds": [round(f, 4) for f in folds]})
    read = rows
    bins = [(0, 64), (64, 128), (128, 256), (256, 512), (512, 1024)]
    cost = []
    for lo, hi in bins:
        m = (ntok[read] >= lo) & (ntok[read] < hi)
        if m.any():
            cost.append({"tokens": f"{lo}-{hi}", "n": int(m.sum()), "p50_ms": round(float(np.median(secs[read][m]) * 1000), 1),
                         "p95_ms": round(float(np.quantile(secs[read][m], 0.95) * 1000), 1)})

    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"local-model uncertainty as a routing signal ({len(test_idx)} sampled test questions)")
    for c in ("signal", "in-distribution APGR", "transfer APGR (mean of 5 folds)"):
        t.add_column(c)
    for r in results:
        t.add_row(r["signal"], f"{r['in_distribution_apgr']:.3f}", f"{r['transfer_apgr']:.3f}")
    Console(width=140).print(t)
    c = Table(title=f"cost of one prefill-only read, {args.threads} threads")
    for col in ("prompt tokens", "n", "p50 ms", "p95 ms"):
        c.add_column(col)
    for r in cost:
        c.add_row(r["tokens"], str(r["n"]), f"{r['p50_ms']:.1f}", f"{r['p95_ms']:.1f}")
    Console(width=140).print(c)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"sampled_test": len(test_idx), "train_read": int(bench.train.sum()), "threads": args.threads,
                                    "signals": results, "cost": cost}, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
