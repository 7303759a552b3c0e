"""``hybridgate router`` across sources: the protocols of *Across sources* and building the outcomes router.

``router compare --across`` and ``router eval --across`` call :func:`across_report`;
``router train-across`` builds a router from several sources' train splits.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from hybridgate.cli_common import fail


def _prepare(data: list[Path], cache: bool, embedder_name: str = "all-MiniLM-L6-v2-static") -> tuple[Any, Any, Any, Any]:
    from hybridgate.classifiers.outcome_router import prepare
    from hybridgate.cli_router import _cache_dir, _embedder

    if not data:
        fail("give one --data per source folder")
    emb = _embedder(embedder_name, "auto")
    sources, inputs, vectors = prepare(data, emb, _cache_dir(cache))
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        fail(f"each --data must be a different source; got {', '.join(names)}")
    missing = [s.name for s in sources if not s.pairs()]
    if missing:
        fail(f"no pairs are known for {', '.join(missing)}; the sources with pairs are routellm-mmlu, mmlu-pro, alpacaeval, llmrouter")
    return emb, sources, inputs, vectors


def across_report(
    data: list[Path], out: Path | None, params: dict[str, Any], protocols: list[str], cache: bool, name: str
) -> dict[str, Any]:
    """Every across-sources protocol for the outcomes recipe ``params``, beside the baselines, printed and written."""
    from hybridgate.classifiers.across_sources import run_all
    from hybridgate.classifiers.across_train import ADAPT
    from hybridgate.classifiers.outcome_router import OutcomeLearner
    from hybridgate.classifiers.outcomes import canonical
    from hybridgate.cli_router import _rule_scores

    for p in protocols:
        if p not in ("loso", "in_source", "new_model"):
            fail(f"--protocol takes loso, in_source or new_model, not {p!r}")
    _, sources, inputs, vectors = _prepare(data, cache)
    learner = OutcomeLearner(sources, inputs, vectors, params, dict(ADAPT), name=name)
    report = run_all(sources, learner, _rule_scores, canonical=canonical, protocols=protocols).row()
    report["settings"] = {"params": params, "adapt": {k: list(v) if isinstance(v, tuple) else v for k, v in ADAPT.items()}}
    _print(report)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "across.json").write_text(json.dumps(report, indent=2, default=float) + "\n", encoding="utf-8")
        _plot(out / "across.png", report)
        typer.echo(f"wrote {out / 'across.json'} and {out / 'across.png'}")
    return report


def _print(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    base = report["baselines"]
    names = list(base["length"]["sources"])
    table = Table(title=f"{report['router']}: APGR per source (mean over its pairs)")
    table.add_column("protocol")
    for n in [*names, "mean"]:
        table.add_column(n, justify="right")

    def row(label: str, block: dict[str, Any] | None) -> None:
        if block:
            table.add_row(label, *(f"{block['sources'][n]['mean_apgr']:.3f}" if n in block["sources"] else "" for n in names), f"{block['mean_apgr']:.3f}")

    for b in ("random", "length", "rule"):
        row(f"baseline: {b}", base[b])
    for n, block in (report.get("leave_one_source_out") or {}).items():
        row("leave one source out" if n == "0" else f"new traffic, N={n}", block)
    row("in source", report.get("in_source"))
    Console().print(table)
    if report.get("new_model"):
        nm = Table(title="new model from N labels (APGR of its pair)")
        cols = ["0", "25", "50", "100", "200", "all"]
        nm.add_column("source · pair")
        for c in cols:
            nm.add_column(f"N={c}", justify="right")
        for src, r in report["new_model"].items():
            nm.add_row(f"{src} · {r['weak']} → {r['strong']}", *(f"{r[c]:.3f}" if c in r else "" for c in cols))
        Console().print(nm)


def _plot(path: Path, report: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = report["baselines"]
    names = list(base["length"]["sources"])
    loso = report.get("leave_one_source_out") or {}
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.6), dpi=100, squeeze=False)
    for ax, n in zip(axes[0], names, strict=True):
        if loso:
            ns = [int(k) for k in loso]
            ax.plot(ns, [loso[k]["sources"][n]["mean_apgr"] for k in loso], marker="o", label=report["router"])
        for b, style in (("length", "--"), ("rule", ":"), ("random", "-.")):
            ax.axhline(base[b]["sources"][n]["mean_apgr"], linestyle=style, color="grey", label=b)
        if report.get("in_source"):
            ax.axhline(report["in_source"]["sources"][n]["mean_apgr"], color="green", label="in source")
        ax.set_title(n)
        ax.set_xlabel("labels of the new traffic (N)")
        ax.set_ylabel("APGR")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def train_across_cmd(data: list[Path], out: Path, name: str, cache: bool, slice_out: Path | None) -> None:
    """Choose the settings on train splits alone, fit on every train split, and record the frozen slice's APGR."""
    import hashlib

    import numpy as np

    from hybridgate.classifiers.across_train import choose_and_fit, outcome_router, slice_apgr, write_slice
    from hybridgate.classifiers.artifact import save_router
    from hybridgate.classifiers.sources import load_source

    emb, sources, inputs, vectors = _prepare(data, cache)
    model, best, table = choose_and_fit(sources, inputs, vectors)
    train_inputs = np.concatenate([inputs[s.name][s.train] for s in sources])
    meta: dict[str, Any] = {
        "name": name,
        "trained_on": {s.name: {"rows": int(s.train.sum()), "split_cut": s.cut, "models": len(s.models)} for s in sources},
        "selection": {"how": "leave one source out within the train splits (N = 0 and 100 labels)", "chosen": best, "candidates": table},
    }
    router = outcome_router(model, emb.name, emb.dim, train_inputs, meta)
    if slice_out is not None:
        src = next((s for s in sources if s.name == "llmrouter"), sources[-1])
        pair = src.pairs()[0]
        write_slice(slice_out, src, pair, 150)
        sl = load_source(slice_out, name=src.name)
        texts = list(sl.prompts)
        scored = type(router)(router.head.with_pair(*pair), router.embedder, router.dim, meta=router.meta)  # type: ignore[attr-defined]
        apgr = slice_apgr(scored, emb.encode(texts), texts, sl.column(pair[0]), sl.column(pair[1]))
        router.meta["claims"] = {
            "frozen_slice": {"file": slice_out.name, "sha256": hashlib.sha256(slice_out.read_bytes()).hexdigest(), "source": src.name,
                             "weak": pair[0], "strong": pair[1], "rows": len(texts), "apgr": apgr}
        }
    header = save_router(router, out, name=name)
    typer.echo(f"chose {best} (inner mean APGR {max(r['mean'] for r in table):.3f}); wrote {out} (version {header['version']})")
