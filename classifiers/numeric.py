"""Small numeric pieces several modules share, under public names: the logistic function, the ROC AUC a router's
ranking is judged by when a gateway checks a new router on its own labels, and reading a router's named arrays.

They were private copies (``heads._sigmoid`` and ``outcomes._sigmoid``, ``heads._need``) imported across modules,
and ``auc`` lived in the server package, so the federated package imported ``serving`` to use it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def sigmoid(z: np.ndarray) -> np.ndarray:
    """The logistic function, clipped so a large log-odds neither overflows nor warns."""
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))


def auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Probability that a random positive outscores a random negative (ties count half); None without both classes."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    if len(pos) == 0 or len(neg) == 0:
        return None
    allv = np.concatenate([pos, neg])
    order = np.argsort(allv, kind="mergesort")
    ranks = np.empty(len(order))
    ranks[order] = np.arange(1, len(order) + 1)
    for v in np.unique(allv):  # average ranks over ties
        tie = allv == v
        ranks[tie] = ranks[tie].mean()
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def need(arrays: Mapping[str, np.ndarray], *names: str) -> list[np.ndarray]:
    """The named arrays of a router, in order; a HeadError naming the missing ones (a router folder from another
    version or a damaged file is refused with that line, not a KeyError)."""
    from hybridgate.classifiers.heads import HeadError  # heads imports this module

    missing = [n for n in names if n not in arrays]
    if missing:
        raise HeadError(f"the router's arrays lack {', '.join(missing)}")
    return [np.asarray(arrays[n]) for n in names]
