"""Fitting a router on logged outcomes, and the scores a fitted router gives."""

from __future__ import annotations

from typing import Any

import numpy as np

from hybridgate.classifiers.data import RoutingData
from hybridgate.classifiers.heads import TrainingSet, make_head
from hybridgate.classifiers.model import RouterModel, calibration, score_quantiles

CALIBRATION_FOLDS = 5


def training_set(model: RouterModel, data: RoutingData, vectors: np.ndarray) -> TrainingSet:
    gain = data.strong.astype(np.int8) - data.weak.astype(np.int8)
    return TrainingSet(model.inputs(vectors, data.prompts), data.label, gain, data.groups)


def fit_router(
    data: RoutingData,
    vectors: np.ndarray,
    head: str,
    params: dict[str, Any] | None = None,
    *,
    embedder: str,
    features: bool = False,
    calibrate: bool = True,
) -> RouterModel:
    """Fit ``head`` on every row of ``data`` (pass the train split), then calibrate its default threshold.

    The calibration quantiles come from out-of-fold scores, so the threshold
    reflects how the router scores queries it has not seen.
    """
    if len(data) != len(vectors):
        raise ValueError("one vector per row is needed")
    model = RouterModel(make_head(head, params), embedder, int(vectors.shape[1]), features=features)
    if hasattr(model.head, "emb_dim"):
        model.head.emb_dim = model.dim  # a head that gates on the embedding reads only its columns
    model.fit_features(data.prompts)
    model.head.fit(training_set(model, data, vectors))
    meta: dict[str, Any] = {
        "training": {
            "source": data.source,
            "rows": len(data),
            "weak": data.weak_name,
            "strong": data.strong_name,
            "label": "strong correct and weak wrong",
            "data_sha256": data.fingerprint(),
        }
    }
    if calibrate and len(data) >= 2 * CALIBRATION_FOLDS:
        quantiles = score_quantiles(out_of_fold_scores(data, vectors, head, params, embedder=embedder, features=features))
        meta["calibration"] = calibration(quantiles, f"{CALIBRATION_FOLDS}-fold out-of-fold scores on the training rows")
    model.meta = meta
    return model


def out_of_fold_scores(
    data: RoutingData,
    vectors: np.ndarray,
    head: str,
    params: dict[str, Any] | None,
    *,
    embedder: str,
    features: bool,
) -> np.ndarray:
    """Each row scored by a router fitted without it; folds follow the prompt hash, so they are stable."""
    fold = np.array([int(h[:8], 16) % CALIBRATION_FOLDS for h in data.sha256])
    out = np.zeros(len(data), dtype=np.float64)
    for f in range(CALIBRATION_FOLDS):
        held = fold == f
        if not held.any() or held.all():
            continue
        part = data.take(~held)
        model = fit_router(part, vectors[~held], head, params, embedder=embedder, features=features, calibrate=False)
        out[held] = model.score(vectors[held], [p for p, h in zip(data.prompts, held, strict=True) if h])
    return out

