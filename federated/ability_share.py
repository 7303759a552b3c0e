"""Sharing a learnt local ability across a fleet: many gateways' few labels fit one ability, no label leaves a gateway.

A gateway whose local model is not in the router's catalogue learns that
model's ability (offset and loadings over the outcome model's query parts)
from its own labels (:mod:`hybridgate.serving.router_adapt`). A fleet running
the same local model can fit it together: the ability is the maximum
a-posteriori fit of :func:`~hybridgate.classifiers.pair_score.fit_ability`,
whose log-loss is a sum over labels, so each round every gateway sends the
gradient and Hessian of its own labels' log-loss at the fleet's current
ability (a vector and a ``(d+1)^2`` matrix: sums over its labels, never a
label) and its summed log-loss there, and the server adds the prior's and takes
one Newton step, or halves the last one when the objective did not fall
(:class:`FleetFit`). After a few rounds that is exactly the ability a single
gateway holding every label would fit: pooled quality, with each gateway's
labels kept home.

The published ability goes out beside the router like the fleet's node
weights: a gateway takes it with ``OutcomeHead.with_local`` when it predicts
its own held-out labels better than its own ability (the same test
:mod:`hybridgate.serving.router_adapt` applies to its own).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from hybridgate.classifiers.numeric import sigmoid
from hybridgate.classifiers.pair_score import Ability


@dataclass(frozen=True)
class ClientUpdate:
    """One gateway's contribution to a round: its labels' log-loss gradient and Hessian at the fleet's ability."""

    grad: np.ndarray  # (d+1,)
    hess: np.ndarray  # (d+1, d+1)
    labels: int
    loss: float = 0.0  # the labels' summed log-loss at the fleet's ability: what the server's line search compares


def _design(u: np.ndarray) -> np.ndarray:
    return np.hstack([np.ones((len(u), 1)), np.asarray(u, dtype=np.float64)])


def client_update(u: np.ndarray, y: np.ndarray, current: Ability) -> ClientUpdate:
    """What a gateway sends: sums over its labels (graded outcomes of its local model; NaN: unknown) at ``current``."""
    keep = ~np.isnan(y)
    x, yk = _design(u[keep]), y[keep]
    w = np.concatenate([[current.offset], current.loadings])
    z = x @ w
    p = sigmoid(z)
    loss = np.minimum(np.logaddexp(0.0, z) - yk * z, LOSS_BOUND)
    return ClientUpdate(x.T @ (p - yk), (x * (p * (1 - p))[:, None]).T @ x, int(keep.sum()), float(loss.sum()))


@dataclass
class FleetFit:
    """The server's side of the fleet's MAP fit: Newton steps with a backtracking line search, one point a round.

    A full Newton step from a prior far from the labels overshoots (a flat Hessian where the prior predicts
    outcomes near 0 or 1) and diverges, so a step is taken only when the objective falls, as
    :func:`~hybridgate.classifiers.pair_score.fit_ability` does. The server cannot compute the objective
    itself: each round the gateways' sums at the point it sent include their summed log-loss, so a round both
    judges the last trial point and, when it is accepted, gives the next Newton direction; a rejected one halves
    the step. It ends at the same optimum as one gateway holding every label, in a few more rounds than Newton steps.
    """

    prior: Ability
    sd_offset: float
    sd_loadings: float
    point: np.ndarray = field(default_factory=lambda: np.zeros(0))
    accepted: np.ndarray | None = None
    labels: int = 0
    converged: bool = False
    steps: int = 0  # points accepted after the prior: 0 means the fleet has not moved from it yet
    _f: float = 0.0
    _grad: np.ndarray = field(default_factory=lambda: np.zeros(0))
    _step: np.ndarray = field(default_factory=lambda: np.zeros(0))
    _t: float = 1.0

    def __post_init__(self) -> None:
        self._mean = np.concatenate([[self.prior.offset], self.prior.loadings]).astype(np.float64)
        d = len(self.prior.loadings)
        self._prec = np.concatenate([[1 / self.sd_offset**2], np.full(d, 1 / self.sd_loadings**2)])
        if self.point.size == 0:
            self.point = self._mean.copy()

    def current(self) -> Ability:
        """The point the next round evaluates."""
        return Ability(self.prior.name, float(self.point[0]), self.point[1:].copy(), "labels", self.labels)

    def best(self) -> Ability | None:
        """The last accepted point: the fleet's ability so far (None before the first round)."""
        if self.accepted is None:
            return None
        return Ability(self.prior.name, float(self.accepted[0]), self.accepted[1:].copy(), "labels", self.labels)

    def update(self, total: ClientUpdate) -> None:
        """A round's summed update at :meth:`current`: accept the point and take the next Newton direction, or halve
        the step. A ValueError when the sums cannot be a fleet's labels (a Hessian that, with the prior's precision,
        is not positive definite, or a negative log-loss: only a gateway that sent garbage makes one)."""
        w = self.point
        hess = total.hess + np.diag(self._prec)
        np.linalg.cholesky(hess)  # raises LinAlgError (a ValueError) when not positive definite
        if total.loss < 0 or not np.isfinite(total.loss):
            raise ValueError(f"a summed log-loss of {total.loss} is not one of labels")
        self.labels = total.labels
        f = total.loss + 0.5 * float(np.sum(self._prec * (w - self._mean) ** 2))
        if self.accepted is not None and f > self._f - 1e-4 * self._t * float(self._grad @ self._step):
            self._t /= 2  # the objective did not fall enough: back towards the accepted point
            self.point = self.accepted - self._t * self._step
            self.converged = bool(np.abs(self._t * self._step).max() < 1e-6)
            return
        self.steps += int(self.accepted is not None)
        self.accepted, self._f = w.copy(), f
        self._grad = total.grad + self._prec * (w - self._mean)
        self._step, self._t = np.linalg.solve(hess, self._grad), 1.0
        self.point = w - self._step
        self.converged = bool(np.abs(self._step).max() < 1e-6)


def total_update(updates: Sequence[ClientUpdate], d: int) -> ClientUpdate:
    """What SecAgg+ hands the server: the sum of the gateways' updates."""
    return ClientUpdate(
        sum((c.grad for c in updates), np.zeros(d + 1)), sum((c.hess for c in updates), np.zeros((d + 1, d + 1))),
        sum(c.labels for c in updates), float(sum(c.loss for c in updates)),
    )


def fleet_ability(
    prior: Ability, clients: Sequence[tuple[np.ndarray, np.ndarray]], sd_offset: float, sd_loadings: float, rounds: int = 8
) -> Ability:
    """The ability the fleet fits together: up to ``rounds`` rounds of :func:`client_update` on each gateway's
    ``(query parts, local outcomes)`` and one :meth:`FleetFit.update`; with no labels anywhere, the prior."""
    if not any(int((~np.isnan(y)).sum()) for _, y in clients):
        return prior
    fit = FleetFit(prior, sd_offset, sd_loadings)
    for _ in range(rounds):
        current = fit.current()
        fit.update(total_update([client_update(u, y, current) for u, y in clients], len(prior.loadings)))
        if fit.converged:
            break
    best = fit.best()
    assert best is not None
    return best


# --- on the wire, through SecAgg+ ---------------------------------------------------------------------------
#
# Each round is one SecAgg+ sum. The server sends the fleet's current ability and the router's query side (the
# linear map from a label's inputs to its query parts ``u``), so a gateway needs nothing but its labels; the
# gateway sends its gradient, the upper triangle of its Hessian, its summed log-loss and its label count, each
# scaled into [-1, 1] by the bounds below (SecAgg+ clips every coordinate to its quantisation range and would
# silently cut a larger sum), and in two limbs (below) so that SecAgg+'s quantisation costs the fit nothing.

MAX_LABELS = 500  # a gateway's labels in one round are capped here: the bound its sums are scaled by
LOSS_BOUND = 50.0  # each label's log-loss is capped here (a point that far off is rejected by the line search anyway)
U_BOUND = 16.0  # each query part is clipped to +-this (about twice the largest seen, 8.7 on llmrouter: a bound, not a change)


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


def _sums_size(d: int) -> int:
    return (d + 1) + (d + 1) * (d + 2) // 2 + 2


def packed_size(d: int) -> int:
    """Two limbs of each scaled sum (:func:`pack`)."""
    return 2 * _sums_size(d)


# SecAgg+ rounds each number to a grid of 2**22 levels over +-8 (secure.py): steps of 2**-18. One limb would leave
# the fleet's fit that coarse (0.03 of a raw gradient a gateway; +-0.05 on an offset from 70 labels, measured), so
# a number goes as two limbs: its value on that grid exactly (no rounding happens to it) and the rest, scaled up
# by LIMB; the server adds ``hi + lo / LIMB``, exact to about 2**-35 of the range.
GRID = 2.0**18
LIMB = 2.0**17


def pack(update: ClientUpdate, d: int) -> np.ndarray:
    """A gateway's sums scaled into [-1, 1]: gradient / (L U), Hessian's upper triangle x 4 / (L U^2), log-loss /
    (L B), labels / L, with L = :data:`MAX_LABELS`, U = :data:`U_BOUND` and B = :data:`LOSS_BOUND` (each label adds
    at most U, U^2/4, B and 1 to them)."""
    top = np.triu_indices(d + 1)
    v = np.clip(np.concatenate([
        update.grad / (MAX_LABELS * U_BOUND), update.hess[top] * 4 / (MAX_LABELS * U_BOUND**2),
        [update.loss / (MAX_LABELS * LOSS_BOUND), update.labels / MAX_LABELS],
    ]), -1.0, 1.0)
    hi = np.round(v * GRID) / GRID
    return np.concatenate([hi, (v - hi) * LIMB]).astype(np.float32)


def unpack(total: np.ndarray, d: int) -> ClientUpdate:
    """The fleet's sums from the sum of the gateways' :func:`pack` vectors."""
    limbs = np.asarray(total, dtype=np.float64)
    if limbs.size != packed_size(d) or not np.isfinite(limbs).all():
        raise ValueError(f"a sum of {limbs.size} numbers is not an ability update of {d} query parts")
    m = _sums_size(d)
    v = limbs[:m] + limbs[m:] / LIMB
    n = d + 1
    grad = v[:n] * MAX_LABELS * U_BOUND
    hess = np.zeros((n, n))
    hess[np.triu_indices(n)] = v[n:-2] * MAX_LABELS * U_BOUND**2 / 4
    hess = hess + np.triu(hess, 1).T
    return ClientUpdate(grad, hess, max(int(round(v[-1] * MAX_LABELS)), 0), float(v[-2] * MAX_LABELS * LOSS_BOUND))


def gateway_vector(vector: np.ndarray, d: int, inputs: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """What a gateway puts into a round's sum: its labels' packed sums at the fleet's ability (``x``: the labels'
    inputs, ``y``: the local model's outcomes; only the newest :data:`MAX_LABELS` count)."""
    current, side = read_round(vector, d, inputs)
    x, y = x[:MAX_LABELS], y[:MAX_LABELS]
    if len(y) == 0:
        return np.zeros(packed_size(d), dtype=np.float32)
    return pack(client_update(side.parts(x), y, current), d)
