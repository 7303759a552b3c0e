"""The three ways a router is judged (``shared/docs/routing-benchmark.md``), for any way of building one.

- **in-distribution**: fit on the benchmark's train split, score its test split.
  Every subject sits on both sides, so a head can score well by recognising
  the subject.
- **transfer**: subjects fall into 5 folds by ``sha256("subject:" + name)``;
  for each fold, fit on the train rows of the *other* subjects and score the
  test rows of this fold's subjects. Nothing of a fold is seen in training.
- **adaptation**: within the transfer protocol, the first N train rows of the
  held-out subjects (by prompt sha256) play a gateway's newly labelled traffic;
  the router fitted without them is adapted on them (:mod:`.adapt`) and scores
  the fold's test rows again.

A :class:`Recipe` says how to fit and score; the protocols call it and return
plain numbers, so the CLI, the benchmarks and the tests share one
implementation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hybridgate.classifiers.adapt import fit_adapter
from hybridgate.classifiers.data import RoutingData, split_of
from hybridgate.classifiers.metrics import RoutingCurve, routing_curve

FOLDS = 5
ADAPTATION_NS: tuple[int | None, ...] = (0, 25, 50, 100, 200, None)  # None: all of the fold's train rows


@dataclass(frozen=True)
class Fitted:
    """A router fitted for one protocol step: scores for any rows, and what the adapter may read beyond them."""

    score: Callable[[np.ndarray], np.ndarray]  # row indices -> scores
    extra: Callable[[np.ndarray], np.ndarray] | None = None  # row indices -> adapter inputs
    heldout: Callable[[], np.ndarray] | None = None  # scores of the second question set, if one was given


# A recipe fits on the rows given by a boolean mask of the whole data set.
Recipe = Callable[[np.ndarray], Fitted]


def subject_fold(name: str) -> int:
    return int(hashlib.sha256(f"subject:{name}".encode()).hexdigest()[:8], 16) % FOLDS


@dataclass
class ProtocolResult:
    name: str
    in_distribution: dict[str, Any] | None = None
    transfer: dict[str, Any] | None = None
    adaptation: dict[str, float] | None = None
    heldout: dict[str, Any] | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        return {
            "router": self.name,
            "in_distribution": self.in_distribution,
            "transfer": self.transfer,
            "adaptation": self.adaptation,
            "heldout": self.heldout,
            "settings": self.settings,
        }


class Bench:
    """One data set, its split and folds, and the curve of any scores on any rows."""

    def __init__(self, data: RoutingData) -> None:
        self.data = data
        self.sha = data.sha256
        self.train = np.array([split_of(p) == "train" for p in data.prompts], dtype=bool)
        self.fold = np.array([subject_fold(g) for g in data.groups])
        self.has_folds = len(set(data.groups)) >= FOLDS and len(set(self.fold.tolist())) == FOLDS

    def curve(self, scores: np.ndarray, rows: np.ndarray) -> RoutingCurve:
        idx = np.nonzero(rows)[0]
        return routing_curve(np.asarray(scores), self.data.weak[idx], self.data.strong[idx], [self.sha[i] for i in idx])

    def scored(self, fitted: Fitted, rows: np.ndarray) -> RoutingCurve:
        idx = np.nonzero(rows)[0]
        return routing_curve(fitted.score(idx), self.data.weak[idx], self.data.strong[idx], [self.sha[i] for i in idx])

    def in_distribution(self, recipe: Recipe) -> dict[str, Any]:
        return self.scored(recipe(self.train), ~self.train).summary()

    def fold_masks(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.train & (self.fold != k), ~self.train & (self.fold == k)

    def transfer(self, recipe: Recipe) -> dict[str, Any]:
        per = []
        for k in range(FOLDS):
            tr, te = self.fold_masks(k)
            per.append({"fold": k, **self.scored(recipe(tr), te).summary()})
        return {"mean_apgr": round(float(np.mean([p["apgr"] for p in per])), 4), "folds": per}

    def adaptation(self, recipe: Recipe, ns: Sequence[int | None] = ADAPTATION_NS) -> dict[str, float]:
        """Mean transfer APGR after adapting on the first N labelled rows of the held-out subjects."""
        out: dict[str, list[float]] = {("all" if n is None else str(n)): [] for n in ns}
        for k in range(FOLDS):
            tr, te = self.fold_masks(k)
            fitted = recipe(tr)
            new = np.nonzero(self.train & (self.fold == k))[0]
            new = new[np.argsort([self.sha[i] for i in new])]
            te_idx = np.nonzero(te)[0]
            base_te = fitted.score(te_idx)
            for n in ns:
                take = new if n is None else new[:n]
                if len(take) == 0 or fitted.extra is None:
                    scores = base_te
                else:
                    adapter = fit_adapter(fitted.score(take), fitted.extra(take), self.data.label[take])
                    scores = adapter.apply(base_te, fitted.extra(te_idx))
                out["all" if n is None else str(n)].append(self.curve(scores, te).apgr)
        return {n: round(float(np.mean(v)), 4) for n, v in out.items()}


def evaluate_recipe(
    name: str,
    recipe: Recipe,
    bench: Bench,
    *,
    transfer: bool,
    adaptation: bool,
    heldout: RoutingData | None = None,
    settings: dict[str, Any] | None = None,
) -> ProtocolResult:
    result = ProtocolResult(name, settings=dict(settings or {}))
    fitted = recipe(bench.train)
    result.in_distribution = bench.scored(fitted, ~bench.train).summary()
    if heldout is not None and fitted.heldout is not None:
        h = heldout
        result.heldout = routing_curve(fitted.heldout(), h.weak, h.strong, h.sha256).summary()
    if bench.has_folds and transfer:
        result.transfer = bench.transfer(recipe)
    if bench.has_folds and adaptation:
        result.adaptation = bench.adaptation(recipe)
    return result


def adapter_inputs(vectors: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """What the adapter reads beyond the router's score: the query's vector, which a gateway's label keeps
    (never the text). Shape features were tried too and added nothing over the router's own."""
    return lambda idx: vectors[idx]


def head_recipe(
    data: RoutingData,
    vectors: np.ndarray,
    kind: str,
    params: dict[str, Any] | None,
    *,
    embedder: str,
    features: bool,
    heldout: tuple[RoutingData, np.ndarray] | None = None,
) -> Recipe:
    from hybridgate.classifiers.training import fit_router

    extra = adapter_inputs(vectors)
    fitted: dict[bytes, Fitted] = {}  # the protocols fit on the same rows more than once

    def recipe(rows: np.ndarray) -> Fitted:
        key = np.packbits(rows).tobytes()
        if key not in fitted:
            fitted[key] = fit(rows)
        return fitted[key]

    def fit(rows: np.ndarray) -> Fitted:
        model = fit_router(data.take(rows), vectors[rows], kind, params, embedder=embedder, features=features, calibrate=False)
        other = None if heldout is None else (lambda: model.score(heldout[1], list(heldout[0].prompts)))
        return Fitted(lambda idx: model.score(vectors[idx], [data.prompts[i] for i in idx]), extra, other)

    return recipe


def fixed_recipe(
    scores: np.ndarray, extra: Callable[[np.ndarray], np.ndarray] | None = None, heldout_scores: np.ndarray | None = None
) -> Recipe:
    """A router that learns nothing (a baseline): the same score for a row whatever it is fitted on."""
    fixed = Fitted(
        lambda idx: np.asarray(scores, dtype=np.float64)[idx], extra, None if heldout_scores is None else (lambda: heldout_scores)
    )
    return lambda rows: fixed
