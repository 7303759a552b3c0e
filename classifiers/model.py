"""A trained router: which embedder it expects, which extra features, and the head that scores."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hybridgate.classifiers.adapt import Adapter, logit
from hybridgate.classifiers.features import NAMES as FEATURE_NAMES
from hybridgate.classifiers.features import feature_matrix
from hybridgate.classifiers.heads import Head
from hybridgate.classifiers.shape import shape_matrix

# Hand features are standardised and then scaled down, so that nine of them
# cannot outvote 384 embedding dimensions of unit length.
FEATURE_WEIGHT = 0.2


@dataclass
class RouterModel:
    head: Head
    embedder: str
    dim: int
    features: bool = False
    feature_mean: np.ndarray = field(default_factory=lambda: np.zeros(len(FEATURE_NAMES), dtype=np.float32))
    feature_scale: np.ndarray = field(default_factory=lambda: np.ones(len(FEATURE_NAMES), dtype=np.float32))
    meta: dict[str, Any] = field(default_factory=dict)
    # The fleet's correction on top of the head (federated, :mod:`hybridgate.federated.deploy`): ``fleet`` is applied
    # to the head's score; ``fleet_step`` is the last round's part alone, applied to the scores of the router it was
    # trained on (``meta["fleet"]["trained_on"]``), which is how a gateway judges it on labels made under that router.
    fleet: Adapter | None = None
    fleet_step: Adapter | None = None

    @property
    def name(self) -> str:
        return str(self.meta.get("name") or f"{self.embedder}-{self.head.kind}")

    @property
    def version(self) -> str:
        return str(self.meta.get("version") or "unsaved")

    def fit_features(self, texts: Sequence[str]) -> None:
        if self.features:
            f = feature_matrix(texts)
            self.feature_mean = f.mean(axis=0).astype(np.float32)
            self.feature_scale = np.where(f.std(axis=0) > 1e-6, f.std(axis=0), 1.0).astype(np.float32)

    @property
    def uses_shape(self) -> bool:
        """Whether the head reads the query's shape features (:mod:`hybridgate.classifiers.shape`)."""
        return bool(getattr(self.head, "needs_shape", False))

    def inputs(self, vectors: np.ndarray, texts: Sequence[str], turns: Sequence[int] | None = None) -> np.ndarray:
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"this router expects {self.dim}-dimensional vectors from {self.embedder}, got shape {vectors.shape}")
        parts = [vectors.astype(np.float32, copy=False)]
        if self.features:
            parts.append((feature_matrix(texts) - self.feature_mean) / self.feature_scale * FEATURE_WEIGHT)
        if self.uses_shape:
            parts.append(shape_matrix(texts, turns))
        return parts[0] if len(parts) == 1 else np.hstack(parts).astype(np.float32)

    def score(self, vectors: np.ndarray, texts: Sequence[str], turns: Sequence[int] | None = None) -> np.ndarray:
        return self.score_inputs(self.inputs(vectors, texts, turns))

    @property
    def reads_text(self) -> bool:
        """Whether its score needs the query's text beyond the vector (a label keeps only the vector)."""
        return self.features or self.uses_shape

    @property
    def trained_on(self) -> str | None:
        """The router version whose scores ``fleet_step`` was trained on (None for a router without one)."""
        fleet = self.meta.get("fleet")
        return str(fleet["trained_on"]) if isinstance(fleet, dict) and fleet.get("trained_on") else None

    def score_inputs(self, x: np.ndarray) -> np.ndarray:
        """Scores of rows already turned into inputs (what a label on the device keeps instead of text)."""
        return self._corrected(np.clip(self.head.score(x), 0.0, 1.0), x)

    def _corrected(self, base: np.ndarray, x: np.ndarray) -> np.ndarray:
        if self.fleet is None:
            return base
        return np.clip(self.fleet.apply(base, x[:, : self.dim]), 0.0, 1.0)

    def score_explained(self, x: np.ndarray) -> tuple[float, list[tuple[str, float]]]:
        """One query's score and the signals that moved its log-odds, largest first (none for a head that
        cannot say), from a single evaluation of the head; the fleet's correction is one more signal."""
        explained = getattr(self.head, "explained", None)
        if explained is None:
            base, pushes = float(np.clip(self.head.score(x[:1]), 0.0, 1.0)[0]), []
        else:
            raw, pushes = explained(x[:1])
            base, pushes = float(np.clip(raw[0], 0.0, 1.0)), list(pushes)
        score = float(self._corrected(np.array([base]), x[:1])[0])
        if self.fleet is not None:
            push = float(logit(np.array([score]))[0] - logit(np.array([base]))[0])
            pushes = sorted([*pushes, ("the fleet's labels", push)], key=lambda p: -abs(p[1]))
        return score, pushes

    def explain(self, x: np.ndarray) -> list[tuple[str, float]]:
        return self.score_explained(x)[1]

    def corrected(self, step: Adapter, **fleet_meta: Any) -> RouterModel:
        """This router with ``step`` (trained on its scores) on top: the same head and arrays, the fleet's
        corrections composed into one. The calibration is this router's until the caller sets another."""
        if step.v.shape != (self.dim,):
            raise ValueError(f"a correction for this router reads {self.dim}-dimensional vectors, not {step.v.shape}")
        meta = {k: v for k, v in self.meta.items() if k not in ("version", "arrays", "created", "fleet")}
        meta["fleet"] = {**fleet_meta, "trained_on": self.version}
        fleet = (self.fleet or Adapter.identity(self.dim)).then(step)
        return RouterModel(
            self.head, self.embedder, self.dim, self.features, self.feature_mean, self.feature_scale, meta, fleet, step
        )

    def threshold_for(self, cloud_share: float) -> float:
        """The score above which ``cloud_share`` of the calibration queries fall."""
        q = self.meta.get("calibration", {}).get("quantiles")
        if not q:
            raise ValueError(f"router {self.name} carries no calibration quantiles")
        return quantile_threshold(np.asarray(q, dtype=np.float64), cloud_share)

    def share_above(self, threshold: float) -> float:
        """The share of calibration queries scoring at or above ``threshold``."""
        q = np.asarray(self.meta.get("calibration", {}).get("quantiles") or [], dtype=np.float64)
        if q.size == 0:
            raise ValueError(f"router {self.name} carries no calibration quantiles")
        return float(1.0 - np.interp(threshold, q, np.linspace(0, 1, len(q))))

    def default_threshold(self) -> float:
        return float(self.meta.get("calibration", {}).get("default_threshold", 0.5))


DEFAULT_CLOUD_SHARE = 0.3


def calibration(quantiles: list[float], source: str) -> dict[str, Any]:
    """The ``calibration`` entry of a router header: score quantiles, where they came from, and the
    threshold that sends the default share of queries to the cloud."""
    return {
        "quantiles": quantiles,
        "source": source,
        "default_cloud_share": DEFAULT_CLOUD_SHARE,
        "default_threshold": quantile_threshold(np.asarray(quantiles), DEFAULT_CLOUD_SHARE),
    }


def score_quantiles(scores: np.ndarray) -> list[float]:
    """101 quantiles (0 %, 1 %, ..., 100 %): enough to set a threshold for any share of cloud calls."""
    return [float(v) for v in np.quantile(np.asarray(scores, dtype=np.float64), np.linspace(0, 1, 101))]


def quantile_threshold(quantiles: np.ndarray, cloud_share: float) -> float:
    if not 0.0 <= cloud_share <= 1.0:
        raise ValueError(f"a share of cloud calls is between 0 and 1, got {cloud_share}")
    # The ends mean what they say for any traffic, not only for queries inside the calibration set's range.
    if cloud_share >= 1.0:
        return 0.0
    if cloud_share <= 0.0:
        return float(np.nextafter(1.0, 2.0))
    return float(np.interp(1.0 - cloud_share, np.linspace(0, 1, len(quantiles)), quantiles))
