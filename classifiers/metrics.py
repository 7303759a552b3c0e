"""Routing quality as the RouteLLM paper measures it: PGR over the share of cloud calls.

A router is judged only by the order it puts questions in: the top fraction
``c`` goes to the strong model. Ties are broken by the prompt's sha256 so that
two runs of the same scores give the same curve, bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

GRID = np.round(np.linspace(0.0, 1.0, 101), 2)


@dataclass(frozen=True)
class RoutingCurve:
    """PGR and accuracy at each share of cloud calls on :data:`GRID`."""

    shares: np.ndarray
    accuracy: np.ndarray
    pgr: np.ndarray
    acc_weak: float
    acc_strong: float

    @property
    def apgr(self) -> float:
        return float(np.sum(np.diff(self.shares) * (self.pgr[1:] + self.pgr[:-1]) / 2))

    def cpt(self, target: float) -> float | None:
        """Smallest share of cloud calls (0..1) whose PGR reaches ``target``; None if none does."""
        hit = np.nonzero(self.pgr >= target - 1e-12)[0]
        return None if hit.size == 0 else float(self.shares[hit[0]])

    def summary(self) -> dict[str, float | None]:
        return {
            "apgr": round(self.apgr, 4),
            "cpt50": self.cpt(0.5),
            "cpt80": self.cpt(0.8),
            "acc_weak": round(self.acc_weak, 4),
            "acc_strong": round(self.acc_strong, 4),
        }


def routing_order(scores: np.ndarray, tie_keys: Sequence[str]) -> np.ndarray:
    """Indices from most to least deserving of the cloud; ties by ``tie_keys`` ascending."""
    if len(scores) != len(tie_keys):
        raise ValueError("one tie key per score is needed")
    keys = np.asarray(tie_keys)
    # lexsort sorts by the last key first: score descending, then the tie key ascending.
    return np.lexsort((keys, -np.asarray(scores, dtype=np.float64)))


def routing_curve(
    scores: np.ndarray, weak_correct: np.ndarray, strong_correct: np.ndarray, tie_keys: Sequence[str]
) -> RoutingCurve:
    weak = np.asarray(weak_correct, dtype=np.float64)
    strong = np.asarray(strong_correct, dtype=np.float64)
    n = len(weak)
    if n == 0 or len(strong) != n or len(scores) != n:
        raise ValueError("scores and both outcome columns must be non-empty and of one length")
    acc_weak, acc_strong = float(weak.mean()), float(strong.mean())
    if acc_strong == acc_weak:
        raise ValueError("the two models are equally accurate on this set: PGR is undefined")
    order = routing_order(scores, tie_keys)
    # Sending the first k questions to the strong model gains strong - weak on each of them.
    gain = np.concatenate([[0.0], np.cumsum((strong - weak)[order])])
    k = np.rint(GRID * n).astype(int)
    accuracy = (weak.sum() + gain[k]) / n
    pgr = (accuracy - acc_weak) / (acc_strong - acc_weak)
    return RoutingCurve(GRID.copy(), accuracy, pgr, acc_weak, acc_strong)


def accuracy_per_joule(curve: RoutingCurve, weak_joules: float, strong_joules: float) -> dict[str, Any]:
    """"Intelligence per watt" of each share of cloud calls: the mix's accuracy over the energy of an average
    answer (each model's energy per answer as configured), and the share where it peaks."""
    if weak_joules <= 0 or strong_joules <= 0:
        raise ValueError("energies per answer must be positive")
    joules = (1.0 - curve.shares) * weak_joules + curve.shares * strong_joules
    per_kj = curve.accuracy / joules * 1000.0
    best = int(np.argmax(per_kj))
    return {
        "weak_joules": weak_joules,
        "strong_joules": strong_joules,
        "share": [round(float(c), 2) for c in curve.shares],
        "accuracy": [round(float(a), 5) for a in curve.accuracy],
        "joules_per_answer": [round(float(j), 4) for j in joules],
        "accuracy_per_kj": [round(float(v), 5) for v in per_kj],
        "best_share": round(float(curve.shares[best]), 2),
    }
