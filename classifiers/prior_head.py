"""A transparent prior over the query's shape, with the embedding as a bounded, gated correction.

Why this shape: a head on the embedding alone learns *which benchmark topic* a
query belongs to and how two models did there, which does not carry over to a
user's traffic (on open chat it ranked worse than a coin). The prior here is a
logistic model over the shape features of :mod:`hybridgate.classifiers.shape`
whose weights start from written-down rules and are fitted to data only within
their sign (a feature that should make a query harder can never make it easier)
and only as far as the data supports (L2 toward the rule's weight). The
embedding then adds a correction learnt by a group-prior head (topic -> gain),
clipped to ``bound`` and scaled by how close the query is to the training data
(cosine to the nearest of a few k-means centroids): on familiar traffic the
topic knowledge helps, on unfamiliar traffic it fades out and the prior decides.

Every term of the final log-odds is a named signal, so each score can be
explained (:meth:`PriorCorrectionHead.explain`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from hybridgate.classifiers.heads import GroupPriorHead, HeadError, TrainingSet
from hybridgate.classifiers.numeric import need, sigmoid
from hybridgate.classifiers.shape import NAMES as SHAPE_NAMES
from hybridgate.classifiers.shape import PRIOR, SIGNS

N_SHAPE = len(SHAPE_NAMES)


def fit_signed_logistic(
    x: np.ndarray, y: np.ndarray, prior: np.ndarray, signs: np.ndarray, lam: float, *, iters: int = 3000, lr: float = 0.5,
    sample_weight: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """Logistic regression (soft targets allowed) with an L2 pull toward ``prior`` and sign constraints.

    Projected full-batch gradient descent: a dozen features and a few thousand
    rows converge in well under a second, and the result depends on nothing but
    the data (no solver randomness).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    sw = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    sw = sw / sw.sum()
    w = prior.astype(np.float64).copy()
    mean = float(np.clip((sw * y).sum(), 1e-4, 1 - 1e-4))
    b = float(np.log(mean / (1 - mean)))
    for _ in range(iters):
        r = (sigmoid(b + x @ w) - y) * sw
        w -= lr * (x.T @ r + 2 * lam * (w - prior))
        b -= lr * float(r.sum())
        w = np.where(signs > 0, np.maximum(w, 0.0), np.where(signs < 0, np.minimum(w, 0.0), w))
    return w, b


def split_shape(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(what the topic head reads: the embedding and any text features, the shape features)."""
    return x[:, :-N_SHAPE], x[:, -N_SHAPE:]


def embedding_part(topic_in: np.ndarray, emb_dim: int) -> np.ndarray:
    """The embedding alone, without text features (``emb_dim`` leading columns; 0: all of them)."""
    return topic_in if emb_dim <= 0 else topic_in[:, :emb_dim]


def _centroids(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    k = max(1, min(k, len(x) // 5))
    c = KMeans(k, n_init=2, random_state=seed).fit(x).cluster_centers_
    return (c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-9)).astype(np.float32)


@dataclass
class TopicCorrection:
    """Which topic of the training data a query is near and how much the cloud gained there, in standard
    deviations, clipped to ``bound`` and faded out as the query moves away from the training data.

    A group-prior head (topic -> gain) gives the raw correction; the gate is the
    cosine to the nearest of ``centroids_k`` k-means centroids of the training
    queries, from none below the 5th percentile of the training queries' own
    closeness to all at their median (chat prompts sit well below that on a
    benchmark of exam questions: median cosine 0.82 against 0.87).
    """

    alpha: float = 1.0
    bound: float = 2.0
    gate: int = 1
    C: float = 1.0
    shrinkage: float = 20.0
    centroids_k: int = 32
    seed: int = 0
    topic: GroupPriorHead = field(default_factory=GroupPriorHead)
    topic_stats: np.ndarray = field(default_factory=lambda: np.array([0.0, 1.0], dtype=np.float32))  # mean, std
    centroids: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    gate_range: np.ndarray = field(default_factory=lambda: np.array([0.0, 1.0], dtype=np.float32))  # lo, hi

    def fit(self, topic_in: np.ndarray, emb: np.ndarray, data: TrainingSet) -> None:
        self.topic = GroupPriorHead(C=self.C, shrinkage=self.shrinkage, seed=self.seed)
        self.topic.fit(TrainingSet(topic_in, data.label, data.gain, data.groups))
        g = self.topic.score(topic_in)
        self.topic_stats = np.array([g.mean(), max(float(g.std()), 1e-6)], dtype=np.float32)
        self.centroids = _centroids(emb, self.centroids_k, self.seed)
        near = (emb @ self.centroids.T).max(axis=1)
        self.gate_range = np.array([np.quantile(near, 0.05), np.quantile(near, 0.5)], dtype=np.float32)

    def parts(self, topic_in: np.ndarray, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(gated correction, gate) for each row."""
        corr = np.clip(self.alpha * (self.topic.score(topic_in) - self.topic_stats[0]) / self.topic_stats[1], -self.bound, self.bound)
        if self.gate and self.centroids.size:
            lo, hi = float(self.gate_range[0]), float(self.gate_range[1])
            gate = np.clip(((emb @ self.centroids.T).max(axis=1) - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
        else:
            gate = np.ones(len(topic_in))
        return corr * gate, gate

    @property
    def group_names(self) -> list[str]:
        return list(self.topic.group_names)

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "topic_weight": self.topic.weight, "topic_bias": self.topic.bias, "topic_rates": self.topic.rates,
            "topic_stats": self.topic_stats, "centroids": self.centroids, "gate_range": self.gate_range,
        }

    def load_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        tw, tb, tr, ts, c, gr = (
            a.astype(np.float32) for a in need(arrays, "topic_weight", "topic_bias", "topic_rates", "topic_stats", "centroids", "gate_range")
        )
        self.topic = GroupPriorHead(weight=tw, bias=tb, rates=tr)
        self.topic_stats, self.centroids, self.gate_range = ts, c, gr


@dataclass
class PriorCorrectionHead:
    """Shape prior + bounded, familiarity-gated embedding correction; target: the cloud's gain."""

    kind: ClassVar[str] = "prior-correction"
    needs_shape: ClassVar[bool] = True
    lam: float = 1e-3  # pull of the data-fitted weights toward the written prior
    alpha: float = 1.0  # log-odds per standard deviation of the topic correction
    bound: float = 2.0  # the correction never moves the log-odds by more than this
    gate: int = 1  # 1: scale the correction by the query's closeness to the training data
    C: float = 1.0
    shrinkage: float = 20.0
    centroids_k: int = 32
    seed: int = 0
    emb_dim: int = 0  # leading columns that are the embedding (the gate's cosine reads only these); 0: all but shape
    group_names: list[str] = field(default_factory=list)
    w: np.ndarray = field(default_factory=lambda: PRIOR.astype(np.float32))
    b: float = 0.0
    shape_mean: np.ndarray = field(default_factory=lambda: np.zeros(N_SHAPE, dtype=np.float32))
    correction: TopicCorrection = field(default_factory=TopicCorrection)

    split = staticmethod(split_shape)

    def _embedding(self, topic_in: np.ndarray) -> np.ndarray:
        return embedding_part(topic_in, self.emb_dim)

    def fit(self, data: TrainingSet) -> None:
        emb, shape = self.split(data.x)
        gain01 = (data.gain.astype(np.float64) + 1.0) / 2.0
        w, b = fit_signed_logistic(shape, gain01, PRIOR, SIGNS.astype(np.float64), self.lam)
        self.w, self.b = w.astype(np.float32), float(b)
        self.shape_mean = shape.mean(axis=0).astype(np.float32)
        self.correction = TopicCorrection(self.alpha, self.bound, self.gate, self.C, self.shrinkage, self.centroids_k, self.seed)
        self.correction.fit(emb, self._embedding(emb), data)
        self.group_names = self.correction.group_names

    def parts(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(prior log-odds, gated correction, gate) for each row."""
        emb, shape = self.split(x)
        corr, gate = self.correction.parts(emb, self._embedding(emb))
        return shape @ self.w + self.b, corr, gate

    def logit(self, x: np.ndarray) -> np.ndarray:
        prior, corr, _ = self.parts(x)
        return prior + corr

    def score(self, x: np.ndarray) -> np.ndarray:
        return sigmoid(self.logit(x))

    def explained(self, x: np.ndarray) -> tuple[np.ndarray, list[tuple[str, float]]]:
        """The first row's score and each signal's push on its log-odds against the average training query,
        largest first, from one evaluation of the head (the gateway asks for both on every decision)."""
        _, shape = self.split(x[:1])
        prior, corr, _ = self.parts(x[:1])
        pushes = [(name, float(self.w[i] * (shape[0, i] - self.shape_mean[i]))) for i, name in enumerate(SHAPE_NAMES)]
        pushes.append(("topic", float(corr[0])))
        return sigmoid(prior + corr), sorted((p for p in pushes if abs(p[1]) >= 1e-4), key=lambda p: -abs(p[1]))

    def params(self) -> dict[str, Any]:
        return {
            "lam": self.lam, "alpha": self.alpha, "bound": self.bound, "gate": self.gate, "C": self.C,
            "shrinkage": self.shrinkage, "centroids_k": self.centroids_k, "seed": self.seed, "emb_dim": self.emb_dim, "target": "gain",
            "groups": self.group_names, "shape_features": list(SHAPE_NAMES),
            "weights": {n: round(float(v), 4) for n, v in zip(SHAPE_NAMES, self.w, strict=True)},
        }

    def arrays(self) -> dict[str, np.ndarray]:
        return {"w": self.w, "b": np.array([self.b], dtype=np.float32), "shape_mean": self.shape_mean, **self.correction.arrays()}

    def load_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        w, b, sm = (a.astype(np.float32) for a in need(arrays, "w", "b", "shape_mean"))
        if w.shape != (N_SHAPE,):
            raise HeadError(f"this router has {w.shape[0]} shape weights; this version computes {N_SHAPE}")
        self.w, self.b, self.shape_mean = w, float(b.reshape(-1)[0]), sm
        self.correction = TopicCorrection(self.alpha, self.bound, self.gate, self.C, self.shrinkage, self.centroids_k, self.seed)
        self.correction.load_arrays(arrays)
