"""What one gateway does in a round, and how an update is checked before it is averaged in.

The head is :class:`~hybridgate.classifiers.heads.GradientLogisticHead`: a
weight vector over the query's embedding plus a bias, trained with numpy
gradient steps so that FedProx's proximal term can be added on the client.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hybridgate.classifiers.heads import GradientLogisticHead, TrainingSet

WEIGHTS = "weights"


@dataclass(frozen=True)
class LocalData:
    """A gateway's labelled rows: query vectors and "the cloud was needed" labels. No text."""

    x: np.ndarray
    label: np.ndarray

    def __len__(self) -> int:
        return len(self.label)

    @property
    def dim(self) -> int | None:
        """The vectors' width, None without rows (what the server's vectors must match)."""
        return int(self.x.shape[1]) if len(self) else None

    def training_set(self) -> TrainingSet:
        gain = self.label.astype(np.int8)
        return TrainingSet(self.x.astype(np.float32), self.label.astype(np.int8), gain, ["gateway"] * len(self.label))


def local_train(start: np.ndarray, data: LocalData, *, epochs: int, lr: float, mu: float = 0.0) -> np.ndarray:
    head = GradientLogisticHead(lr=lr, epochs=epochs)
    head.fit_from(start, data.training_set(), mu=mu)
    return head.weights


def scores(weights: np.ndarray, x: np.ndarray) -> np.ndarray:
    head = GradientLogisticHead()
    head.weights = weights.astype(np.float32)
    return head.score(x)


class UpdateRejected(ValueError):
    """A client's update that must not be averaged in; the reason is logged, the round goes on."""


def check_update(update: np.ndarray, global_weights: np.ndarray, max_norm: float) -> None:
    """Shape, finite values, and a bound on how far the update moves the model."""
    if update.shape != global_weights.shape:
        raise UpdateRejected(f"shape {update.shape} is not {global_weights.shape}")
    if not np.all(np.isfinite(update)):
        raise UpdateRejected("non-finite values")
    moved = float(np.linalg.norm(update.astype(np.float64) - global_weights))
    if moved > max_norm:
        raise UpdateRejected(f"moves the model by {moved:.2f}, more than the bound {max_norm:.2f}")
