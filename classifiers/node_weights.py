"""How long a node will take to answer, as a weighted sum of what is known about it: W = α·W_cpu + β·W_ai + γ·W_nl.

The three parts are in milliseconds, so each weight says how much of its part
shows up in the time the answer really took:

- ``W_cpu`` (load): the wait behind the node's queue, its queued and running
  requests times the time one answer of this length takes there;
- ``W_ai`` (capability): this answer's tokens at the node's measured decode
  speed (an accelerator's node starts from a faster guess until measured);
- ``W_nl`` (network): the node's probe round trip.

The defaults (α = β = γ = 1, no intercept) are the physics of a single-slot
server; a node that batches requests makes α smaller, a network that needs
several round trips per answer makes γ larger. :class:`OnlineNodeRegression`
fits them on a gateway from each answer's parts and its measured total time: a
ridge regression with forgetting, pulled toward the defaults by a few pseudo
observations and kept within bounds, so a handful of odd answers cannot throw
the weights far. It lives here, not in ``router``, because the federated apps
train it too and must not import the gateway's router.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

PARTS: tuple[str, ...] = ("cpu", "ai", "nl")
# intercept (ms), alpha, beta, gamma: the bounds a fitted or received vector must keep.
LOWER = np.array([0.0, 0.0, 0.0, 0.0])
UPPER = np.array([10_000.0, 10.0, 10.0, 10.0])


class NodeWeightsError(ValueError):
    """A weight vector of the wrong length, not finite, or outside the bounds."""


@dataclass(frozen=True)
class NodeWeights:
    intercept_ms: float = 0.0
    cpu: float = 1.0
    ai: float = 1.0
    nl: float = 1.0

    def array(self) -> np.ndarray:
        return np.array([self.intercept_ms, self.cpu, self.ai, self.nl], dtype=np.float64)

    @classmethod
    def from_array(cls, values: Sequence[float] | np.ndarray) -> NodeWeights:
        """Checked: a vector from another gateway or the server is trusted no further than its bounds."""
        a = np.asarray(values, dtype=np.float64).reshape(-1)
        if a.shape != (4,):
            raise NodeWeightsError(f"node weights are 4 numbers (intercept, cpu, ai, nl), not {a.size}")
        if not np.isfinite(a).all():
            raise NodeWeightsError("node weights must be finite")
        if (a < LOWER).any() or (a > UPPER).any():
            raise NodeWeightsError(f"node weights out of bounds: {a.round(3).tolist()} (from {LOWER.tolist()} to {UPPER.tolist()})")
        return cls(*(float(v) for v in a))

    def predict_ms(self, parts: np.ndarray) -> np.ndarray:
        """Expected total milliseconds for rows of (cpu, ai, nl) parts."""
        p = np.atleast_2d(np.asarray(parts, dtype=np.float64))
        return self.intercept_ms + p @ self.array()[1:]

    def as_dict(self) -> dict[str, float]:
        return {"intercept_ms": round(self.intercept_ms, 3), "cpu": round(self.cpu, 4), "ai": round(self.ai, 4), "nl": round(self.nl, 4)}


@dataclass(frozen=True)
class NodeFeatures:
    """What a gateway knows about one node when it chooses."""

    load: float  # requests queued or running there (its own report, or what this gateway has in flight)
    ms_per_token: float  # measured decode time per answer token (a configured guess until measured)
    rtt_ms: float  # probe round trip
    accelerator: bool = False

    def parts(self, tokens: int) -> np.ndarray:
        """(W_cpu, W_ai, W_nl) in milliseconds for an answer of ``tokens`` tokens."""
        one = max(1, tokens) * self.ms_per_token
        return np.array([max(0.0, self.load) * one, one, self.rtt_ms], dtype=np.float64)


@dataclass(frozen=True)
class Offer:
    """What became of weights offered from elsewhere, and the mean errors (ms) that decided it."""

    taken: bool
    own_error: float | None
    offered_error: float | None
    answers: int


class OnlineNodeRegression:
    """Ridge regression of total milliseconds on the parts, with exponential forgetting and a pull to ``prior``.

    After ``n`` answers the weights solve
    ``min Σ λ^age (y - w·x)² + k · Σ_j s_j (w_j - prior_j)²`` where ``s_j`` is the
    average square of part ``j`` (so ``k`` counts pseudo-answers at the prior
    whatever the scale of a part), then are clipped into the bounds.
    """

    def __init__(self, prior: NodeWeights = NodeWeights(), *, forget: float = 0.995, prior_strength: float = 20.0, window: int = 200) -> None:
        self.prior = prior
        self.forget = forget
        self.prior_strength = prior_strength
        self._a = np.zeros((4, 4))
        self._c = np.zeros(4)
        self._n = 0.0  # the effective number of answers (forgotten ones weigh less)
        self.observed = 0
        self.weights = prior
        self.recent: deque[tuple[np.ndarray, float]] = deque(maxlen=window)  # for comparing weight vectors

    def observe(self, parts: np.ndarray, total_ms: float) -> None:
        x = np.concatenate([[1.0], np.asarray(parts, dtype=np.float64)])
        if not (np.isfinite(x).all() and math.isfinite(total_ms) and total_ms >= 0):
            return
        self._a = self.forget * self._a + np.outer(x, x)
        self._c = self.forget * self._c + x * total_ms
        self._n = self.forget * self._n + 1.0
        self.observed += 1
        self.recent.append((x[1:], float(total_ms)))
        self.weights = self._solve()

    def _solve(self) -> NodeWeights:
        scale = np.maximum(np.diag(self._a) / max(self._n, 1e-9), 1e-6)
        reg = np.diag(self.prior_strength * scale)
        w0 = self.prior.array()
        try:
            w = np.linalg.solve(self._a + reg, self._c + reg @ w0)
        except np.linalg.LinAlgError:
            return self.weights
        return NodeWeights(*(float(v) for v in np.clip(w, LOWER, UPPER)))

    def error(self, weights: NodeWeights, rows: Iterable[tuple[np.ndarray, float]] | None = None) -> float | None:
        """Mean absolute error in ms of ``weights`` on the recent answers (None before any)."""
        data = list(self.recent if rows is None else rows)
        if not data:
            return None
        x = np.stack([r[0] for r in data])
        y = np.array([r[1] for r in data])
        return float(np.abs(weights.predict_ms(x) - y).mean())

    def offer(self, other: NodeWeights, min_answers: int = 20) -> Offer:
        """Take weights learnt elsewhere (the fleet's) if they predict this gateway's recent answers at least as
        well as its own, or if it has too few answers to judge. The gateway keeps learning from them: the fleet's
        vector becomes the prior its own answers pull away from."""
        mine, theirs = self.error(self.weights), self.error(other)
        if len(self.recent) >= min_answers and mine is not None and theirs is not None and theirs > mine:
            return Offer(False, mine, theirs, len(self.recent))
        self.prior = other
        self.weights = self._solve() if self._n > 0 else other
        return Offer(True, mine, theirs, len(self.recent))
