"""The routing score for the deployed pair, and how a gateway's own labels move it.

The score is the expected gain of the cloud model over the local one on this
query, ``P(cloud does well) - P(local does well)``, from the two models'
abilities in the :class:`~hybridgate.classifiers.outcomes.OutcomeModel`; the
local model's failure chance ``1 - P(local does well)`` comes with it for the
cascade and the gray band. A model the catalogue lacks gets a prior ability (a
cloud model is assumed strong, a local one weak): with neither known, that is
the *catalogue-free* router.

Labels (a gateway's shadow comparisons, cascade outcomes and feedback: each a
query's vector and the two models' outcomes on it) move the score two ways:

- each model's ability is re-fitted against the query parts (offset and
  loadings, a maximum a-posteriori fit whose prior is the catalogue's ability,
  or the prior ability for an unknown model), so a model's own labels take over
  from the prior as fast as they carry more than it;
- the gain still unexplained on labelled queries is carried to similar queries
  (similarity-weighted neighbours of the query vectors, shrunk towards zero by
  ``kappa``): the "task" found from the query itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hybridgate.classifiers.numeric import sigmoid
from hybridgate.classifiers.outcomes import OutcomeModel

STRONG_PRIOR_QUANTILE = 0.8
WEAK_PRIOR_QUANTILE = 0.2


@dataclass(frozen=True)
class Ability:
    """A model's offset and loadings, and where they came from (``catalogue``, ``prior``, ``labels``: learnt
    from ``labels`` of them)."""

    name: str
    offset: float
    loadings: np.ndarray
    origin: str
    labels: int = 0

    def source(self) -> str:
        """Where the ability came from, as a decision explains it."""
        return f"learnt from {self.labels} labels" if self.origin == "labels" else self.origin


def ability_for(om: OutcomeModel, name: str | None, *, cloud: bool, source: str | None = None) -> Ability:
    found = None if not name else om.ability(name, source)
    if found is not None:
        return Ability(str(name), found[0], found[1], "catalogue")
    offset, loadings = om.prior_ability(STRONG_PRIOR_QUANTILE if cloud else WEAK_PRIOR_QUANTILE)
    return Ability(name or ("cloud" if cloud else "local"), offset, loadings, "prior")


def success(u: np.ndarray, a: Ability) -> np.ndarray:
    return sigmoid(a.offset + u @ a.loadings)


def fit_ability(u: np.ndarray, y: np.ndarray, prior: Ability, sd_offset: float, sd_loadings: float, iters: int = 25) -> Ability:
    """The maximum a-posteriori offset and loadings given graded outcomes ``y`` on queries with parts ``u``.

    Newton steps on the log-loss plus the Gaussian prior: with no labels the prior
    is returned; with many the labels decide. ``sd_*`` say how far the prior may be off.
    """
    keep = ~np.isnan(y)
    u, y = u[keep], y[keep]
    if len(y) == 0:
        return prior
    d = u.shape[1]
    x = np.hstack([np.ones((len(u), 1)), u])
    mean = np.concatenate([[prior.offset], prior.loadings])
    prec = np.concatenate([[1 / sd_offset**2], np.full(d, 1 / sd_loadings**2)])
    w = mean.copy()
    for _ in range(iters):
        p = sigmoid(x @ w)
        grad = x.T @ (p - y) + prec * (w - mean)
        hess = (x * (p * (1 - p))[:, None]).T @ x + np.diag(prec)
        step = np.linalg.solve(hess, grad)
        # Backtracking: a full Newton step from a prior far from the labels (p near 0 or 1, a flat Hessian)
        # overshoots and diverges (seen on llmrouter: offsets of +-100s); halve it until the objective falls.
        f0, t = map_objective(x, y, w, mean, prec), 1.0
        while map_objective(x, y, w - t * step, mean, prec) > f0 - 1e-4 * t * float(grad @ step) and t > 1e-6:
            t /= 2
        w -= t * step
        if np.abs(t * step).max() < 1e-6:
            break
    return Ability(prior.name, float(w[0]), w[1:], "labels", len(y))


def map_objective(x: np.ndarray, y: np.ndarray, w: np.ndarray, mean: np.ndarray, prec: np.ndarray) -> float:
    """The log-loss of graded outcomes ``y`` under ``sigmoid(x @ w)`` (summed) plus the Gaussian prior's penalty."""
    z = x @ w
    return float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * np.sum(prec * (w - mean) ** 2))


@dataclass(frozen=True)
class Labels:
    """A gateway's labelled queries for one pair: the query parts, vectors and both models' outcomes."""

    u: np.ndarray  # (n, d) query parts
    vectors: np.ndarray  # (n, D) unit query vectors (for neighbours)
    local: np.ndarray  # (n,) graded outcome, NaN unknown
    cloud: np.ndarray  # (n,)
    shape: np.ndarray | None = None  # (n, shape features) standardised, for the signals the traffic favours

    def __len__(self) -> int:
        return len(self.local)


@dataclass
class PairScorer:
    """Gain of ``cloud`` over ``local`` for queries given as parts ``u`` (and vectors, when labels are used)."""

    local: Ability
    cloud: Ability
    memory: np.ndarray | None = None  # label vectors
    residual: np.ndarray | None = None  # gain unexplained on each label
    k: int = 20
    tau: float = 0.05
    kappa: float = 3.0
    blend: np.ndarray | None = None  # weights of [prior gain, neighbour push, shape features...] fitted on labels

    def prior_gain(self, u: np.ndarray) -> np.ndarray:
        return success(u, self.cloud) - success(u, self.local)

    def local_failure(self, u: np.ndarray) -> np.ndarray:
        return 1.0 - success(u, self.local)

    def neighbour_push(self, vectors: np.ndarray) -> np.ndarray:
        if self.memory is None or self.residual is None or len(self.memory) == 0:
            return np.zeros(len(vectors))
        sim = vectors @ self.memory.T
        k = min(self.k, sim.shape[1])
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        s = np.take_along_axis(sim, top, axis=1)
        # Weights relative to the nearest label (1 for it); kappa pseudo-labels of zero residual shrink the push.
        w = np.exp((s - s.max(axis=1, keepdims=True)) / self.tau)
        return (w * self.residual[top]).sum(axis=1) / (w.sum(axis=1) + self.kappa)

    def signals(self, u: np.ndarray, vectors: np.ndarray, shape: np.ndarray, push: np.ndarray | None = None) -> np.ndarray:
        """The columns the label-fitted blend weighs: prior gain, neighbours' unexplained gain, each shape feature."""
        push = self.neighbour_push(vectors) if push is None else push
        return np.hstack([self.prior_gain(u)[:, None], push[:, None], shape])

    def gain(self, u: np.ndarray, vectors: np.ndarray | None = None, shape: np.ndarray | None = None) -> np.ndarray:
        g = self.prior_gain(u)
        if vectors is None:
            return g
        if self.blend is not None and shape is not None:
            return self.signals(u, vectors, shape) @ self.blend
        return g + self.neighbour_push(vectors)


def adapted(
    om: OutcomeModel,
    local: Ability,
    cloud: Ability,
    labels: Labels | None,
    *,
    sd_known: tuple[float, float] = (0.5, 0.1),
    sd_prior: tuple[float, float] = (1.5, 0.3),
    k: int = 20,
    tau: float = 0.05,
    kappa: float = 3.0,
    blend_l2: float = 0.0,
) -> PairScorer:
    """The pair's scorer after its labels: abilities re-fitted, then the unexplained gain kept for neighbours."""
    if labels is None or len(labels) == 0:
        return PairScorer(local, cloud, k=k, tau=tau, kappa=kappa)
    la = fit_ability(labels.u, labels.local, local, *(sd_known if local.origin == "catalogue" else sd_prior))
    ca = fit_ability(labels.u, labels.cloud, cloud, *(sd_known if cloud.origin == "catalogue" else sd_prior))
    scorer = PairScorer(la, ca, k=k, tau=tau, kappa=kappa)
    seen = ~(np.isnan(labels.local) | np.isnan(labels.cloud))
    if seen.any():
        gain = labels.cloud[seen] - labels.local[seen]
        scorer.memory = labels.vectors[seen]
        scorer.residual = gain - scorer.prior_gain(labels.u[seen])
        if blend_l2 > 0 and labels.shape is not None and seen.sum() >= 2:
            scorer.blend = _fit_blend(scorer, labels, seen, gain, blend_l2)
    return scorer


def _fit_blend(scorer: PairScorer, labels: Labels, seen: np.ndarray, gain: np.ndarray, l2: float) -> np.ndarray:
    """Ridge of the labels' gain on the signals, shrunk towards "prior plus neighbours" (weights 1, 1, 0...).

    Each kind of traffic favours its own cheap signal (length on puzzles, none on chat): the labels say which.
    The neighbour column is computed leaving each label out, so it is not credited with knowing its own answer.
    """
    assert labels.shape is not None
    vec = labels.vectors[seen]
    sim = vec @ vec.T
    np.fill_diagonal(sim, -np.inf)
    loo = PairScorer(scorer.local, scorer.cloud, k=scorer.k, tau=scorer.tau, kappa=scorer.kappa)
    push = np.zeros(len(vec))
    if len(vec) > 1:
        k = min(scorer.k, len(vec) - 1)
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        s = np.take_along_axis(sim, top, axis=1)
        w = np.exp((s - s.max(axis=1, keepdims=True)) / scorer.tau)
        push = (w * scorer.residual[top]).sum(axis=1) / (w.sum(axis=1) + scorer.kappa)  # type: ignore[index]
    x = loo.signals(labels.u[seen], vec, labels.shape[seen], push)
    prior = np.zeros(x.shape[1])
    prior[:2] = 1.0
    xc = x - x.mean(axis=0)
    yc = gain - gain.mean()
    return prior + np.linalg.solve(xc.T @ xc + l2 * np.eye(x.shape[1]), xc.T @ (yc - xc @ prior))
