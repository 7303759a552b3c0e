"""Sharing a learnt local ability across a fleet: many gateways' few labels fit one ability, no label leaves a gateway.

A gateway whose local model is not in the router's catalogue learns that
model's ability (offset and loadings over the outcome model's query parts)
from its own labels (:mod:`hybridgate.serving.router_adapt`). A fleet running
the same local model can fit it together: the ability is the maximum
a-posteriori fit of :func:`~hybridgate.classifiers.pair_score.fit_ability`,
whose log-loss is a sum over labels, so each round every gateway sends the
gradient and Hessian of its own labels' log-loss at the fleet's current
ability (a vector and a ``(d+1)^2`` matrix: sums over its labels, never a
label), and the server adds the prior's and takes one Newton step. After a few
rounds that is exactly the ability a single gateway holding every label would
fit: pooled quality, with each gateway's labels kept home.

The published ability goes out beside the router like the fleet's node
weights: a gateway takes it with ``OutcomeHead.with_local`` when it predicts
its own held-out labels better than its own ability (the same test
:mod:`hybridgate.serving.router_adapt` applies to its own).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hybridgate.classifiers.numeric import sigmoid
from hybridgate.classifiers.pair_score import Ability


@dataclass(frozen=True)
class ClientUpdate:
    """One gateway's contribution to a round: its labels' log-loss gradient and Hessian at the fleet's ability."""

    grad: np.ndarray  # (d+1,)
    hess: np.ndarray  # (d+1, d+1)
    labels: int


def _design(u: np.ndarray) -> np.ndarray:
    return np.hstack([np.ones((len(u), 1)), np.asarray(u, dtype=np.float64)])


def client_update(u: np.ndarray, y: np.ndarray, current: Ability) -> ClientUpdate:
    """What a gateway sends: sums over its labels (graded outcomes of its local model; NaN: unknown) at ``current``."""
    keep = ~np.isnan(y)
    x, yk = _design(u[keep]), y[keep]
    w = np.concatenate([[current.offset], current.loadings])
    p = sigmoid(x @ w)
    return ClientUpdate(x.T @ (p - yk), (x * (p * (1 - p))[:, None]).T @ x, int(keep.sum()))


def server_step(current: Ability, prior: Ability, updates: Sequence[ClientUpdate], sd_offset: float, sd_loadings: float) -> Ability:
    """One Newton step of the fleet's MAP fit: the clients' sums plus the prior's gradient and precision."""
    d = len(prior.loadings)
    w = np.concatenate([[current.offset], current.loadings])
    mean = np.concatenate([[prior.offset], prior.loadings])
    prec = np.concatenate([[1 / sd_offset**2], np.full(d, 1 / sd_loadings**2)])
    grad = prec * (w - mean) + sum((c.grad for c in updates), np.zeros(d + 1))
    hess = np.diag(prec) + sum((c.hess for c in updates), np.zeros((d + 1, d + 1)))
    w = w - np.linalg.solve(hess, grad)
    n = sum(c.labels for c in updates)
    return Ability(prior.name, float(w[0]), w[1:], "labels" if n else prior.origin, n)


def fleet_ability(
    prior: Ability, clients: Sequence[tuple[np.ndarray, np.ndarray]], sd_offset: float, sd_loadings: float, rounds: int = 8
) -> Ability:
    """The ability the fleet fits together: ``rounds`` rounds of :func:`client_update` on each gateway's
    ``(query parts, local outcomes)`` and one :func:`server_step`; with no labels anywhere, the prior."""
    if not any(int((~np.isnan(y)).sum()) for _, y in clients):
        return prior
    current = prior
    for _ in range(rounds):
        current = server_step(current, prior, [client_update(u, y, current) for u, y in clients], sd_offset, sd_loadings)
    return current
