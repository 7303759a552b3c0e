"""The outcome model's gain stacked with prompt length, then fitted to a gateway's own labels.

Each kind of traffic favours its own cheap signal: prompt length pays on
puzzles and maths (``llmrouter``), the pair's expected gain on exams, neither
on open chat. The outcome model's query side learns topic well and length
badly (it is one of ~400 inputs), so this score stacks the two explicitly:

    score = a * z(gain) + b * z(length) + c * z(neighbours' unexplained gain)

- ``z``: each signal standardised over the traffic scored (a gateway keeps the
  same running mean and spread of its recent queries);
- with no labels the weights are the prior ``(1, length_weight, 0)``, the
  length weight a setting chosen on train splits alone (:mod:`.across_train`);
- with labels (the pair's two columns on a few queries of this traffic) the
  weights are a ridge fit of the labels' observed gain, shrunk towards the
  prior by ``l2`` pseudo-rows, so tens of labels move them only as far as they
  agree; the neighbour column on a label is computed leaving that label out.

The abilities are re-fitted from the labels first (:func:`.pair_score.adapted`),
so ``gain`` is already the pair's gain on this traffic as far as the labels tell.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hybridgate.classifiers.across_sources import Pair
from hybridgate.classifiers.outcome_router import FittedOutcomes, OutcomeLearner
from hybridgate.classifiers.pair_score import Labels, PairScorer, ability_for, adapted

LENGTH_COLUMN = "length"  # the shape feature (log words) the stack weighs


@dataclass(frozen=True)
class StackSettings:
    """How far length (and the shape features' rule score) count with no labels, how hard labels are shrunk
    towards that prior, and the neighbours' settings.

    The defaults were chosen on train splits alone: leave one source out *within* the train splits, no labels
    and 100 (:func:`.across_train.inner_score`), over length weights 0-3 and shape weights 0-2 with ``l2`` 100;
    ``length_weight`` 2, ``shape_weight`` 0 won (inner mean 0.569). Re-fitting the two abilities from the labels
    as well (``refit_abilities``) moved the score less reliably than leaving that to the weights and neighbours.
    """

    length_weight: float = 2.0
    shape_weight: float = 0.0
    l2: float = 100.0
    k: int = 20
    tau: float = 0.03
    kappa: float = 1.0
    refit_abilities: bool = False


def _z(col: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``col`` standardised by the mean and spread of ``ref`` (per column)."""
    sd = ref.std(axis=0)
    return (col - ref.mean(axis=0)) / np.where(sd > 1e-9, sd, 1.0)


def loo_push(scorer: PairScorer, vectors: np.ndarray) -> np.ndarray:
    """Each label's neighbour push from the *other* labels (its own residual would tell it its answer)."""
    if scorer.residual is None or len(vectors) < 2:
        return np.zeros(len(vectors))
    sim = vectors @ vectors.T
    np.fill_diagonal(sim, -np.inf)
    k = min(scorer.k, len(vectors) - 1)
    top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    s = np.take_along_axis(sim, top, axis=1)
    w = np.exp((s - s.max(axis=1, keepdims=True)) / scorer.tau)
    return (w * scorer.residual[top]).sum(axis=1) / (w.sum(axis=1) + scorer.kappa)


def stack_weights(x: np.ndarray, y: np.ndarray, prior: np.ndarray, l2: float) -> np.ndarray:
    """Ridge of ``y`` on the standardised columns ``x``, shrunk towards ``prior`` (rescaled to the labels' gain).

    The prior's scale is fitted first (one number: how much gain a unit of the prior score carries here), so the
    shrinkage pulls towards the prior's *direction*, not towards a scale the labels never had.
    """
    xc, yc = x - x.mean(axis=0), y - y.mean()
    p = xc @ prior
    scale = max(float(p @ yc) / max(float(p @ p), 1e-9), 0.0)
    w0 = prior * (scale if scale > 0 else 1e-3)
    return w0 + np.linalg.solve(xc.T @ xc + l2 * np.eye(x.shape[1]), xc.T @ (yc - xc @ w0))


@dataclass
class FittedStack:
    base: FittedOutcomes
    settings: StackSettings
    length_col: int

    def cheap(self, x: np.ndarray) -> np.ndarray:
        """The cheap signals of rows of inputs: log words, and the shape features weighed by their prior weights
        (the rule scorer's reading of the query)."""
        from hybridgate.classifiers.shape import FEATURES

        first = self.length_col - [f.name for f in FEATURES].index(LENGTH_COLUMN)
        return np.column_stack([x[:, self.length_col], x[:, first : first + len(FEATURES)] @ np.array([f.prior for f in FEATURES])])

    def score(self, source: str, idx: np.ndarray, pair: Pair, labels: np.ndarray, *, seen_source: bool) -> np.ndarray:
        b, st = self.base, self.settings
        src = b.sources[source]
        x, vec = b.inputs[source], b.vectors[source]
        scale = source if seen_source else None
        local = ability_for(b.model, pair[0], cloud=False, source=scale)
        cloud = ability_for(b.model, pair[1], cloud=True, source=scale)
        lab = None
        if len(labels):
            lab = Labels(b.model.latent(x[labels]), vec[labels], src.column(pair[0])[labels], src.column(pair[1])[labels])
        scorer = adapted(b.model, local, cloud, lab if st.refit_abilities else None, k=st.k, tau=st.tau, kappa=st.kappa)
        if lab is not None and not st.refit_abilities:
            seen0 = ~(np.isnan(lab.local) | np.isnan(lab.cloud))
            scorer.memory = lab.vectors[seen0]
            scorer.residual = (lab.cloud - lab.local)[seen0] - scorer.prior_gain(lab.u[seen0])
        g = scorer.prior_gain(b.model.latent(x[idx]))
        cheap = self.cheap(x[idx])
        prior = np.array([1.0, st.length_weight, st.shape_weight, 1.0])
        push = scorer.neighbour_push(vec[idx])
        cols = np.column_stack([_z(g, g), _z(cheap, cheap), push])
        if lab is None or scorer.residual is None or len(scorer.residual) < 2:
            return cols @ prior
        seen = ~(np.isnan(lab.local) | np.isnan(lab.cloud))
        gl = scorer.prior_gain(lab.u[seen])
        xl = np.column_stack([_z(gl, g), _z(self.cheap(x[labels][seen]), cheap), loo_push(scorer, lab.vectors[seen])])
        y = lab.cloud[seen] - lab.local[seen]
        w = stack_weights(xl, y, prior, st.l2)
        return cols @ w


@dataclass
class StackLearner:
    """The across-sources learner of this score: an outcome model fitted as :class:`OutcomeLearner` fits it."""

    outcomes: OutcomeLearner
    settings: StackSettings = field(default_factory=StackSettings)
    name: str = "outcomes + length stack"

    def fit(self, rows: Mapping[str, np.ndarray], hidden: frozenset[str]) -> FittedStack:
        return self.wrap(self.outcomes.fit(rows, hidden))

    def wrap(self, base: FittedOutcomes) -> FittedStack:
        from hybridgate.classifiers.shape import NAMES

        n_in = next(iter(base.inputs.values())).shape[1]
        return FittedStack(base, self.settings, n_in - len(NAMES) + NAMES.index(LENGTH_COLUMN))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, **self.settings.__dict__}
