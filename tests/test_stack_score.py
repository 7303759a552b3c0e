"""The stack's weights: the prior's direction with few labels, what the labels say with many."""

from __future__ import annotations

import numpy as np

from hybridgate.classifiers.pair_score import Ability, PairScorer
from hybridgate.classifiers.stack_score import loo_push, stack_weights


def _labels(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))  # gain, length, shape rule score, neighbours
    y = 0.3 * x[:, 1] + rng.normal(0, 0.3, n)  # this traffic: only length says where the cloud pays
    return x, y


def test_many_labels_move_the_weight_to_the_signal_that_pays_here() -> None:
    x, y = _labels(400)
    prior = np.array([1.0, 0.0, 0.0, 1.0])
    w = stack_weights(x, y, prior, l2=100.0)
    assert w[1] > 0.2 and abs(w[0]) < 0.1 and abs(w[3]) < 0.1


def test_a_strong_shrink_keeps_the_priors_direction() -> None:
    x, y = _labels(30)
    prior = np.array([1.0, 2.0, 0.0, 1.0])
    w = stack_weights(x, y, prior, l2=1e9)
    np.testing.assert_allclose(w / np.linalg.norm(w), prior / np.linalg.norm(prior), atol=1e-4)


def test_a_labels_neighbour_column_never_reads_its_own_gain() -> None:
    a = Ability("m", 0.0, np.zeros(2), "prior")
    scorer = PairScorer(a, a, k=1, tau=0.05, kappa=0.0)
    vec = np.eye(3)
    vec[2] = vec[0]  # rows 0 and 2 are the same query
    scorer.residual = np.array([1.0, -1.0, 0.5])
    push = loo_push(scorer, vec)
    assert push[0] == 0.5 and push[2] == 1.0  # each gets its twin's residual, not its own
