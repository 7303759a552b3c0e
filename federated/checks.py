"""What each side of a federation refuses from the other: nothing a participant sends can break the fleet.

The server reads three things from a gateway besides its weight vector, and
checks each: the example count that weights its update in the average (a
positive integer, capped, so no gateway buys weight by claiming more), the
score quantiles it pools to calibrate the published router (101 finite numbers
in [0, 1], non-decreasing), and, on the differential-privacy path, the update
itself (a malformed one counts as "no change", since the accountant needs every
sampled gateway's reply). A gateway bounds what the server may ask of it: the
local epochs, learning rate and proximal term of a round, and the weight
vectors it is asked to train from or score with (finite, the right size, of a
sane norm), so a hostile server cannot make a device burn its CPU or read its
labels through a crafted vector.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from hybridgate.federated.defaults import DEFAULTS

MAX_EXAMPLES = 10_000  # a gateway's update weighs at most as much as this many labels
MAX_EPOCHS = 50
MAX_LR = 5.0
MAX_MU = 10.0
MAX_WEIGHT_NORM = 1_000.0  # a logistic head's weights: far beyond anything training gives, far below overflow
QUANTILES = 101


class ReplyRejected(ValueError):
    """Something a gateway sent that the server will not use; logged, and the round goes on."""


class RequestRejected(ValueError):
    """Something the server asked that a gateway will not do; it answers with an error instead."""


def checked_count(value: Any, cap: int = MAX_EXAMPLES) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value != int(value) or value < 1:
        raise ReplyRejected(f"example count {value!r} is not a positive integer")
    return min(int(value), cap)


def checked_quantiles(values: Any) -> np.ndarray:
    try:
        q = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ReplyRejected(f"score quantiles are not numbers: {exc}") from None
    if q.shape != (QUANTILES,):
        raise ReplyRejected(f"{q.size} score quantiles, not {QUANTILES}")
    if not np.isfinite(q).all() or q.min() < 0.0 or q.max() > 1.0:
        raise ReplyRejected("score quantiles must be finite and within [0, 1]")
    if (np.diff(q) < 0).any():
        raise ReplyRejected("score quantiles must not decrease")
    return q


def pooled_quantiles(replies: Iterable[tuple[Any, Any]]) -> tuple[list[float] | None, list[str]]:
    """Each gateway's quantiles, checked, averaged by its (capped) label count; and why any were refused."""
    parts: list[tuple[np.ndarray, int]] = []
    refused: list[str] = []
    for values, count in replies:
        try:
            parts.append((checked_quantiles(values), checked_count(count)))
        except ReplyRejected as exc:
            refused.append(str(exc))
    if not parts:
        return None, refused
    total = sum(n for _, n in parts)
    return [float(v) for v in sum(q * n for q, n in parts) / total], refused


def checked_weights(weights: np.ndarray, dim: int | None) -> np.ndarray:
    """A weight vector the server sent: one finite vector, ``dim`` + 1 long where the gateway knows its dim."""
    w = np.asarray(weights)
    if w.ndim != 1 or (dim is not None and w.shape != (dim + 1,)):
        raise RequestRejected(f"weights of shape {w.shape}; this gateway's head has {'?' if dim is None else dim + 1}")
    if not np.isfinite(w).all():
        raise RequestRejected("weights must be finite")
    if float(np.linalg.norm(w.astype(np.float64))) > MAX_WEIGHT_NORM:
        raise RequestRejected(f"weights of norm over {MAX_WEIGHT_NORM:.0f}")
    return w


def checked_train_request(config: Mapping[str, Any], start: np.ndarray, dim: int | None) -> tuple[int, float, float]:
    """(epochs, learning rate, proximal term) of a round the server asked for, within this gateway's bounds."""
    epochs, lr, mu = config.get("local-epochs", DEFAULTS.local_epochs), config.get("lr", DEFAULTS.lr), config.get("proximal-mu", 0.0)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or not 1 <= epochs <= MAX_EPOCHS:
        raise RequestRejected(f"local-epochs {epochs!r} outside 1..{MAX_EPOCHS}")
    for name, value, top, zero_ok in (("lr", lr, MAX_LR, False), ("proximal-mu", mu, MAX_MU, True)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise RequestRejected(f"{name} {value!r} is not a number")
        if not (0.0 <= value if zero_ok else 0.0 < value) or value > top:
            raise RequestRejected(f"{name} {value!r} outside {'[0' if zero_ok else '(0'}, {top}]")
    checked_weights(start, dim)
    return int(epochs), float(lr), float(mu)
