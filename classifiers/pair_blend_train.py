"""Fitting the pair-blend head (:mod:`.pair_blend_head`) on several sources' rows, and scoring a source's pair.

One fit serves every weighting of the five signals: the weights only scale
terms that are already standardised, so the selection among weightings
(:mod:`.default_choice`, on inner splits of the train splits) fits the outcome
model, the neighbours and the topic correction once per set of training rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hybridgate.classifiers.across_sources import Pair
from hybridgate.classifiers.heads import TrainingSet
from hybridgate.classifiers.model import RouterModel, calibration, score_quantiles
from hybridgate.classifiers.outcome_router import OutcomeLearner
from hybridgate.classifiers.outcomes import canonical
from hybridgate.classifiers.pair_blend_head import PairBlendHead, build_pair_blend
from hybridgate.classifiers.sources import Source


def source_gain(src: Source, hidden: frozenset[str] = frozenset()) -> np.ndarray:
    """Each row's gain of the strong over the weak model, the mean over the source's pairs (NaN: no pair seen).

    Pairs with a model in ``hidden`` (by column or catalogue name) are left out: under the new-model protocol the
    held-out model's outcomes must not reach the neighbours or the topic correction either."""
    pairs = [p for p in src.pairs() if not hidden & {p[0], p[1], canonical(p[0]), canonical(p[1])}]
    if not pairs:
        return np.full(len(src), np.nan)
    gains = np.column_stack([src.column(p[1]) - src.column(p[0]) for p in pairs])
    seen = ~np.isnan(gains)
    total = np.where(seen, gains, 0.0).sum(axis=1)
    count = seen.sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def training_set(
    sources: Sequence[Source], inputs: Mapping[str, np.ndarray], rows: Mapping[str, np.ndarray], hidden: frozenset[str] = frozenset()
) -> TrainingSet:
    """The rows' inputs, whether the cloud gained (Platt's label), the gain centred within each source (what the
    neighbours and the topic correction learn: no source is "harder" than another to them) and source-named groups."""
    by = {s.name: s for s in sources}
    xs: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    gains: list[np.ndarray] = []
    groups: list[str] = []
    for name, mask in rows.items():
        src = by[name]
        g = source_gain(src, hidden)
        idx = np.nonzero(mask & ~np.isnan(g))[0]
        if len(idx) == 0:
            continue
        xs.append(inputs[name][idx].astype(np.float32))
        labels.append((g[idx] > 0).astype(np.int64))
        gains.append(g[idx] - g[idx].mean())
        groups.extend(f"{name}:{src.groups[i]}" for i in idx)
    return TrainingSet(np.vstack(xs), np.concatenate(labels), np.concatenate(gains), groups)


@dataclass
class PairBlendLearner:
    """Fits the head on the given rows of the sources (outcome model and blend part on the same rows)."""

    sources: Sequence[Source]
    inputs: Mapping[str, np.ndarray]
    vectors: Mapping[str, np.ndarray]
    outcome_params: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def fit(self, rows: Mapping[str, np.ndarray], hidden: frozenset[str] = frozenset()) -> PairBlendHead:
        """One head on ``rows``; the models in ``hidden`` are never seen (neither by the outcome model nor in the
        gain the blend part learns)."""
        outcomes = OutcomeLearner(self.sources, self.inputs, self.vectors, dict(self.outcome_params)).fit(rows, hidden)
        data = training_set(self.sources, self.inputs, rows, hidden)
        return build_pair_blend(outcomes.model, data, emb_dim=next(iter(self.vectors.values())).shape[1], **self.settings)


def weighted(head: PairBlendHead, **weights: float) -> PairBlendHead:
    """The same fitted head with other signal weights (the Platt scale is kept: it does not change the ranking)."""
    out = dataclasses.replace(head)
    for name, value in weights.items():
        if not name.startswith("w_"):
            raise ValueError(f"{name} is not a signal weight")
        setattr(out, name, float(value))
    return out


def pair_scores(head: PairBlendHead, inputs: np.ndarray, pair: Pair | None) -> np.ndarray:
    """Scores of rows of inputs for ``pair`` (weak, strong; None: the catalogue-free pair)."""
    scored = head.with_pair(*(pair if pair is not None else (None, None)))
    return np.asarray(scored.score(np.asarray(inputs, dtype=np.float32)), dtype=np.float64)


def pair_blend_router(head: PairBlendHead, embedder: str, dim: int, inputs_all: np.ndarray, meta: dict[str, Any]) -> RouterModel:
    """The router to save: the head for the catalogue-free pair (the pair-free part), calibrated on the training
    queries. A gateway's configured pair changes the score's spread, not the calibration's reference queries."""
    router = RouterModel(head.with_pair(None, None), embedder, dim, features=False, meta=dict(meta))
    scores = router.head.score(np.asarray(inputs_all, dtype=np.float32))
    router.meta["calibration"] = calibration(score_quantiles(scores), "the train splits' queries, catalogue-free pair")
    return router
