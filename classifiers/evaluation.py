"""Scoring a router on logged outcomes and writing what the benchmark protocol asks for.

An evaluation folder holds ``scores.csv`` (``prompt_sha256``, ``score``),
``report.json`` (APGR, CPT(50 %), CPT(80 %), the two accuracies, the router's
name and settings) and ``pgr.png``: PGR against the share of cloud calls, with
the random and the perfect router drawn beside it.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hybridgate.classifiers.baselines import oracle_scores
from hybridgate.classifiers.data import RoutingData
from hybridgate.classifiers.metrics import RoutingCurve, routing_curve


@dataclass(frozen=True)
class Evaluation:
    name: str
    scores: np.ndarray
    curve: RoutingCurve
    settings: dict[str, Any]

    def row(self) -> dict[str, Any]:
        return {"router": self.name, **self.curve.summary()}


def evaluate(name: str, scores: np.ndarray, data: RoutingData, settings: Mapping[str, Any] | None = None) -> Evaluation:
    curve = routing_curve(scores, data.weak, data.strong, data.sha256)
    return Evaluation(name, np.asarray(scores, dtype=np.float64), curve, dict(settings or {}))


def write_scores(path: Path, data: RoutingData, scores: np.ndarray) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["prompt_sha256", "score"])
        for sha, s in zip(data.sha256, scores, strict=True):
            w.writerow([sha, f"{float(s):.6f}"])


def write_report(out: Path, ev: Evaluation, data: RoutingData, split: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    write_scores(out / "scores.csv", data, ev.scores)
    report: dict[str, Any] = {
        **ev.curve.summary(),
        "n_test": len(data),
        "split": split,
        "router": ev.name,
        "settings": ev.settings,
        "data": {"source": data.source, "weak": data.weak_name, "strong": data.strong_name, "dropped_contaminated": data.dropped_contaminated},
        "curve": {"share": ev.curve.shares.tolist(), "pgr": [round(float(v), 5) for v in ev.curve.pgr]},
        **dict(extra or {}),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    plot_curves(out / "pgr.png", [ev], data, title=f"{ev.name} on {split} ({len(data)} questions)")
    return report


def plot_curves(path: Path, evals: list[Evaluation], data: RoutingData, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    perfect = routing_curve(oracle_scores(data), data.weak, data.strong, data.sha256)
    fig, ax = plt.subplots(figsize=(7, 5), dpi=110)
    ax.plot(perfect.shares * 100, perfect.pgr, color="black", linestyle=":", label=f"perfect (APGR {perfect.apgr:.3f})")
    ax.plot([0, 100], [0, 1], color="grey", linestyle="--", label="random (APGR 0.500)")
    for ev in evals:
        ax.plot(ev.curve.shares * 100, ev.curve.pgr, label=f"{ev.name} (APGR {ev.curve.apgr:.3f})")
    for level in (0.5, 0.8):
        ax.axhline(level, color="lightgrey", linewidth=0.8)
    ax.set_xlabel("share of calls sent to the cloud (%)")
    ax.set_ylabel("performance gap recovered (PGR)")
    ax.set_title(title)
    ax.set_xlim(0, 100)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
