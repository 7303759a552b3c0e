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


# --- on the wire, through SecAgg+ ---------------------------------------------------------------------------
#
# Each round is one SecAgg+ sum. The server sends the fleet's current ability and the router's query side (the
# linear map from a label's inputs to its query parts ``u``), so a gateway needs nothing but its labels; the
# gateway sends its gradient, the upper triangle of its Hessian and its label count, each scaled into [-1, 1] by
# the bounds below (SecAgg+ clips every coordinate to its quantisation range and would silently cut a larger sum).

MAX_LABELS = 500  # a gateway's labels in one round are capped here: the bound its sums are scaled by
U_BOUND = 8.0  # each query part is clipped to +-this (far beyond the standardised parts seen: a bound, not a change)


@dataclass(frozen=True)
class QuerySide:
    """The router's map from a label's inputs (vector, then shape numbers) to its query parts: ``((x - mean) / scale) @ w``."""

    mean: np.ndarray  # (D,)
    scale: np.ndarray  # (D,)
    w: np.ndarray  # (D, d)

    def parts(self, x: np.ndarray) -> np.ndarray:
        return np.clip(((np.asarray(x, dtype=np.float64) - self.mean) / self.scale) @ self.w, -U_BOUND, U_BOUND)


def round_vector(current: Ability, side: QuerySide) -> np.ndarray:
    """What the server sends each gateway for a round: the fleet's ability, then the query side, flat."""
    return np.concatenate([[current.offset], current.loadings, side.mean, side.scale, side.w.ravel()]).astype(np.float32)


def read_round(vector: np.ndarray, d: int, inputs: int) -> tuple[Ability, QuerySide]:
    """The ability and query side a round's vector carries (``d`` parts, ``inputs`` numbers a label); a ValueError
    when its size says otherwise."""
    v = np.asarray(vector, dtype=np.float64).ravel()
    if d < 1 or inputs < 1 or v.size != 1 + d + 2 * inputs + inputs * d or not np.isfinite(v).all():
        raise ValueError(f"an ability round of {v.size} numbers is not one of {d} query parts over {inputs} inputs")
    a, m = 1 + d, 1 + d + inputs
    side = QuerySide(v[a:m], v[m:m + inputs], v[m + inputs:].reshape(inputs, d))
    if (side.scale <= 0).any():
        raise ValueError("an ability round's input scales must be positive")
    return Ability("fleet", float(v[0]), v[1:a], "fleet"), side


def packed_size(d: int) -> int:
    return (d + 1) + (d + 1) * (d + 2) // 2 + 1


def pack(update: ClientUpdate, d: int) -> np.ndarray:
    """A gateway's sums scaled into [-1, 1]: gradient / (L U), Hessian's upper triangle x 4 / (L U^2), labels / L,
    with L = :data:`MAX_LABELS` and U = :data:`U_BOUND` (each label adds at most U, U^2/4 and 1 to them)."""
    top = np.triu_indices(d + 1)
    return np.concatenate([
        update.grad / (MAX_LABELS * U_BOUND), update.hess[top] * 4 / (MAX_LABELS * U_BOUND**2), [update.labels / MAX_LABELS],
    ]).astype(np.float32)


def unpack(total: np.ndarray, d: int) -> ClientUpdate:
    """The fleet's sums from the sum of the gateways' :func:`pack` vectors."""
    v = np.asarray(total, dtype=np.float64)
    if v.size != packed_size(d) or not np.isfinite(v).all():
        raise ValueError(f"a sum of {v.size} numbers is not an ability update of {d} query parts")
    n = d + 1
    grad = v[:n] * MAX_LABELS * U_BOUND
    hess = np.zeros((n, n))
    hess[np.triu_indices(n)] = v[n:-1] * MAX_LABELS * U_BOUND**2 / 4
    hess = hess + np.triu(hess, 1).T
    return ClientUpdate(grad, hess, max(int(round(v[-1] * MAX_LABELS)), 0))


def gateway_vector(vector: np.ndarray, d: int, inputs: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """What a gateway puts into a round's sum: its labels' packed sums at the fleet's ability (``x``: the labels'
    inputs, ``y``: the local model's outcomes; only the newest :data:`MAX_LABELS` count)."""
    current, side = read_round(vector, d, inputs)
    x, y = x[:MAX_LABELS], y[:MAX_LABELS]
    if len(y) == 0:
        return np.zeros(packed_size(d), dtype=np.float32)
    return pack(client_update(side.parts(x), y, current), d)


def server_round(current: Ability, prior: Ability, total: np.ndarray, sd_offset: float, sd_loadings: float) -> Ability:
    """The Newton step from a round's summed vector; a ValueError when the sum cannot be a fleet's labels (a Hessian
    that, with the prior's precision, is not positive definite: only a gateway that sent garbage makes one)."""
    d = len(prior.loadings)
    update = unpack(total, d)
    prec = np.concatenate([[1 / sd_offset**2], np.full(d, 1 / sd_loadings**2)])
    np.linalg.cholesky(update.hess + np.diag(prec))  # raises LinAlgError (a ValueError) when not positive definite
    return server_step(current, prior, [update], sd_offset, sd_loadings)
