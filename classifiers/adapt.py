"""Adapting a shipped router to one gateway's traffic from a few labels, without touching the embedder.

A gateway's labels ("the cloud was needed" for a query, from feedback, cascade
outcomes and shadow comparisons) are few and come from traffic the shipped
router may never have seen. Refitting the whole head on them would throw away
what it learnt; this adapter instead learns a small logistic correction *on
top* of the router's own log-odds:

    z = a * z_router + b + v . vector

pulled toward the identity (a = 1, everything else 0) by an L2 penalty whose
strength falls as labels accumulate. With no labels it is the shipped router;
with a hundred it has learnt which topics of this user's traffic the cloud
helps on (on the benchmark's unseen subjects, 100 labels: +0.085 APGR for the shape prior, +0.015 for the blend, which starts higher). It is arrays only, saved beside a router
like any other (``adapter.*`` in its npz), and trained in a second or less.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hybridgate.classifiers.numeric import sigmoid

EPS = 1e-4


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return np.log(p / (1 - p))


@dataclass
class Adapter:
    """The correction; ``a=1`` and zeros elsewhere leave the router's scores unchanged."""

    a: float = 1.0
    b: float = 0.0
    v: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))  # on the inputs beyond the router
    rows: int = 0

    def apply(self, base_scores: np.ndarray, extra: np.ndarray) -> np.ndarray:
        z = self.a * logit(base_scores) + self.b
        if self.v.size:
            z = z + extra @ self.v
        return sigmoid(z)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"adapter.ab": np.array([self.a, self.b], dtype=np.float32), "adapter.v": self.v.astype(np.float32)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], rows: int, prefix: str = "adapter") -> Adapter:
        ab = np.asarray(arrays[f"{prefix}.ab"], dtype=np.float64).reshape(-1)
        return cls(float(ab[0]), float(ab[1]), np.asarray(arrays[f"{prefix}.v"], dtype=np.float32), rows)

    @classmethod
    def from_weights(cls, weights: np.ndarray, rows: int = 0) -> Adapter:
        """The correction a logistic head on ``[logit(router score), vector]`` learnt (bias last): how the fleet
        trains it (:mod:`hybridgate.federated.fleet_adaptation`). The router's ranking may be discounted, never
        reversed, as in :func:`fit_adapter`."""
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        if w.size < 2 or not np.all(np.isfinite(w)):
            raise ValueError(f"a correction needs finite weights [a, v..., b], got {w.size} numbers")
        return cls(max(float(w[0]), 0.0), float(w[-1]), w[1:-1].astype(np.float32), rows)

    def weights(self) -> np.ndarray:
        """The inverse of :meth:`from_weights`: the start of the fleet's next round of training."""
        return np.concatenate([[self.a], self.v.astype(np.float64), [self.b]]).astype(np.float32)

    def then(self, step: Adapter) -> Adapter:
        """This correction followed by ``step`` (trained on this one's scores), as one correction:
        ``a2 (a1 z + b1 + v1.x) + b2 + v2.x``."""
        v1 = self.v if self.v.size else np.zeros_like(step.v)
        v2 = step.v if step.v.size else np.zeros_like(v1)
        if v1.shape != v2.shape:
            raise ValueError(f"corrections over {v1.size} and {v2.size} inputs cannot be composed")
        return Adapter(step.a * self.a, step.a * self.b + step.b, (step.a * v1 + v2).astype(np.float32), self.rows + step.rows)

    @classmethod
    def identity(cls, dim: int) -> Adapter:
        return cls(v=np.zeros(dim, dtype=np.float32))


def fit_adapter(
    base_scores: np.ndarray, extra: np.ndarray, labels: np.ndarray, *, strength: float = 5.0, iters: int = 2000, lr: float = 0.5
) -> Adapter:
    """Fit the correction on ``labels`` (1: the cloud was needed; soft labels in [0, 1] work too).

    ``extra`` holds what the router's score does not already say for each row
    (the query's vector and shape features). The pull toward the identity is
    ``strength / n`` per coordinate: with few labels it dominates, with many
    the data do.
    """
    y = np.asarray(labels, dtype=np.float64)
    n = len(y)
    if n == 0:
        return Adapter(v=np.zeros(extra.shape[1], dtype=np.float32))
    z0 = logit(base_scores)
    x = np.asarray(extra, dtype=np.float64)
    lam = strength / n
    a, b, v = 1.0, 0.0, np.zeros(x.shape[1])
    for _ in range(iters):
        r = (sigmoid(a * z0 + b + x @ v) - y) / n
        a -= lr * (float(r @ z0) + lam * (a - 1.0))
        b -= lr * (float(r.sum()) + lam * b)
        v -= lr * (x.T @ r + lam * v)
        a = max(a, 0.0)  # the router's own ranking may be discounted, never reversed
    return Adapter(a, b, v.astype(np.float32), n)
