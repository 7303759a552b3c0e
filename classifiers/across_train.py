"""Building the outcomes router from several sources: settings chosen on train splits alone, then one fit.

The choice among candidate settings never reads a test split: each candidate
is scored by leaving one source out *within the train splits* (train on the
other sources' train rows, score this source's train rows for its pairs, with
no labels and with its first :data:`INNER_LABELS` train rows as labels), and
the best mean wins. The shipped router is then fitted on every source's train
split, so every test split stays a fair test of it.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hybridgate.classifiers.across_sources import first_train_rows, in_family
from hybridgate.classifiers.metrics import routing_curve
from hybridgate.classifiers.model import RouterModel, calibration, score_quantiles
from hybridgate.classifiers.outcome_head import OutcomeHead
from hybridgate.classifiers.outcome_router import OutcomeLearner
from hybridgate.classifiers.outcomes import OutcomeModel
from hybridgate.classifiers.sources import Source

INNER_LABELS = 100
CANDIDATES: tuple[dict[str, Any], ...] = ({"dim": 4, "l2_w": 0.1}, {"dim": 6, "l2_w": 0.01}, {"dim": 2, "l2_w": 0.1})
ADAPT: dict[str, Any] = {"blend_l2": 20.0, "sd_prior": (1.5, 0.05), "kappa": 1.0, "tau": 0.03}


def _inner_rows(sources: Sequence[Source], target: Source) -> dict[str, np.ndarray]:
    out = {}
    for s in sources:
        if s.name == target.name:
            continue
        rows = s.train & (~s.mmlu_rows if in_family(target) else True)
        if rows.any():
            out[s.name] = rows
    return out


def inner_score(sources: Sequence[Source], learner: OutcomeLearner) -> dict[str, Any]:
    """Mean APGR of leaving each source out within the train splits, with no labels and with INNER_LABELS."""
    per: dict[str, dict[str, float]] = {}
    for src in sources:
        fitted = learner.fit(_inner_rows(sources, src), frozenset())
        labels = first_train_rows(src, INNER_LABELS)
        rest = np.setdiff1d(np.nonzero(src.train)[0], labels)
        sha = src.sha256
        res: dict[str, list[float]] = {"0": [], str(INNER_LABELS): []}
        for pair in src.pairs():
            w, s = src.column(pair[0]), src.column(pair[1])
            idx = rest[~np.isnan(w[rest]) & ~np.isnan(s[rest])]
            for key, lab in (("0", np.zeros(0, dtype=int)), (str(INNER_LABELS), labels)):
                scores = fitted.score(src.name, idx, pair, lab, seen_source=False)
                res[key].append(routing_curve(scores, w[idx], s[idx], [sha[i] for i in idx]).apgr)
        per[src.name] = {k: round(float(np.mean(v)), 4) for k, v in res.items() if v}
    mean = float(np.mean([v for p in per.values() for v in p.values()]))
    return {"mean": round(mean, 4), "sources": per}


def choose_and_fit(
    sources: Sequence[Source],
    inputs: Mapping[str, np.ndarray],
    vectors: Mapping[str, np.ndarray],
    candidates: Sequence[dict[str, Any]] = CANDIDATES,
) -> tuple[OutcomeModel, dict[str, Any], list[dict[str, Any]]]:
    """The candidate that scores best on the inner protocol, fitted on every source's train split."""
    table = []
    for params in candidates:
        learner = OutcomeLearner(sources, inputs, vectors, dict(params), dict(ADAPT))
        table.append({"params": dict(params), **inner_score(sources, learner)})
    best = max(table, key=lambda r: r["mean"])["params"]
    learner = OutcomeLearner(sources, inputs, vectors, dict(best), dict(ADAPT))
    fitted = learner.fit({s.name: s.train for s in sources}, frozenset())
    return fitted.model, best, table


def outcome_router(model: OutcomeModel, embedder: str, dim: int, inputs_all: np.ndarray, meta: dict[str, Any]) -> RouterModel:
    """The router to save: the outcomes head for the catalogue-free pair, calibrated on the training queries."""
    head = OutcomeHead(model=model)
    router = RouterModel(head, embedder, dim, features=False, meta=dict(meta))
    router.meta["calibration"] = calibration(score_quantiles(head.score(inputs_all)), "the train splits' queries, catalogue-free pair")
    return router


def slice_apgr(router: RouterModel, vectors: np.ndarray, texts: Sequence[str], weak: np.ndarray, strong: np.ndarray) -> float:
    """APGR of ``router`` on a labelled slice (the shipped header's claim, recomputed by a test)."""
    scores = router.score(vectors, list(texts))
    keys = [hashlib.sha256(t.encode("utf-8")).hexdigest() for t in texts]
    return round(routing_curve(scores, weak, strong, keys).apgr, 4)


def write_slice(path: Path, src: Source, pair: tuple[str, str], n: int) -> None:
    """The first ``n`` test rows (by sha256) of ``src`` with the pair's two columns: a small frozen fixture."""
    idx = np.nonzero(~src.train)[0]
    sha = src.sha256
    idx = idx[np.argsort([sha[i] for i in idx], kind="stable")][:n]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["prompt", "task", pair[0], pair[1]])
        for i in idx:
            w.writerow([src.prompts[i], src.groups[i], *(str(bool(src.column(m)[i] >= 0.5)) for m in pair)])
