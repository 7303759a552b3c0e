"""A fleet fits one local ability from every gateway's labels, sending sums, never labels."""

from __future__ import annotations

import numpy as np

from hybridgate.classifiers.numeric import sigmoid
from hybridgate.classifiers.pair_score import Ability, fit_ability
from hybridgate.federated.ability_share import client_update, fleet_ability

SD = (1.5, 0.3)


def _fleet(seed: int = 0, gateways: int = 5, each: int = 30, d: int = 4) -> tuple[Ability, list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = np.array([-1.2, 0.8, -0.5, 0.3, 0.0])[: d + 1]
    clients = []
    for _ in range(gateways):
        u = rng.normal(size=(each, d))
        y = (rng.random(each) < sigmoid(truth[0] + u @ truth[1:])).astype(float)
        y[rng.random(each) < 0.1] = np.nan  # a label that says nothing of the local model
        clients.append((u, y))
    return Ability("SmolLM2-135M-Instruct", 0.5, np.zeros(d), "prior"), clients, truth


def test_the_fleets_ability_is_the_one_all_labels_pooled_would_fit() -> None:
    prior, clients, _ = _fleet()
    fleet = fleet_ability(prior, clients, *SD)
    pooled = fit_ability(np.vstack([u for u, _ in clients]), np.concatenate([y for _, y in clients]), prior, *SD)
    assert fleet.origin == "labels" and fleet.labels == pooled.labels
    np.testing.assert_allclose([fleet.offset, *fleet.loadings], [pooled.offset, *pooled.loadings], atol=1e-6)


def test_the_fleet_learns_more_than_one_gateway_alone() -> None:
    prior, clients, truth = _fleet(seed=1)
    alone = fit_ability(*clients[0], prior, *SD)
    fleet = fleet_ability(prior, clients, *SD)
    def err(a):
        return float(np.abs(np.concatenate([[a.offset], a.loadings]) - truth).sum())
    assert err(fleet) < err(alone)


def test_a_gateway_sends_sums_of_the_size_of_the_ability_whatever_its_labels() -> None:
    prior, clients, _ = _fleet(each=50)
    up = client_update(*clients[0], prior)
    assert up.grad.shape == (5,) and up.hess.shape == (5, 5) and up.labels == int((~np.isnan(clients[0][1])).sum())


def test_no_labels_anywhere_leaves_the_prior() -> None:
    prior, clients, _ = _fleet()
    empty = [(u, np.full(len(u), np.nan)) for u, _ in clients]
    assert fleet_ability(prior, empty, *SD) is prior
