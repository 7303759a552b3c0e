"""A fleet fits one local ability from every gateway's labels, sending sums, never labels."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridgate.classifiers.numeric import sigmoid
from hybridgate.classifiers.pair_score import Ability, fit_ability
from hybridgate.federated.ability_share import (
    MAX_LABELS,
    FleetFit,
    QuerySide,
    client_update,
    fleet_ability,
    gateway_vector,
    packed_size,
    read_round,
    round_vector,
    total_update,
    unpack,
)
from hybridgate.federated.secure import CLIPPING_RANGE

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


def _side(d: int = 4, inputs: int = 7, seed: int = 3) -> tuple[QuerySide, np.ndarray]:
    """A query side whose parts are the first ``d`` inputs (standardised by 1), and the clients' inputs for it."""
    rng = np.random.default_rng(seed)
    w = np.vstack([np.eye(d), np.zeros((inputs - d, d))])
    return QuerySide(np.zeros(inputs), np.ones(inputs), w), rng


def test_rounds_of_packed_sums_fit_what_all_labels_pooled_would() -> None:
    """What travels (the round's vector, each gateway's packed sums, added as SecAgg+ adds them) gives the pooled fit."""
    prior, clients, _ = _fleet(seed=2)
    d = len(prior.loadings)
    side, rng = _side(d)
    inputs = [np.hstack([u, rng.normal(size=(len(u), 3))]) for u, _ in clients]
    fit = FleetFit(prior, *SD)
    for _ in range(10):
        total = sum(gateway_vector(round_vector(fit.current(), side), d, d + 3, x, y).astype(np.float64)
                    for x, (_, y) in zip(inputs, clients, strict=True))
        fit.update(unpack(np.asarray(total), d))
    current = fit.best()
    assert current is not None
    pooled = fit_ability(np.vstack([u for u, _ in clients]), np.concatenate([y for _, y in clients]), prior, *SD)
    assert current.labels == pooled.labels
    # Equal up to the wire's float32 (a scaled gradient's 1e-7 is 4e-4 of a raw one: about 1e-5 on the fit).
    np.testing.assert_allclose([current.offset, *current.loadings], [pooled.offset, *pooled.loadings], atol=1e-4)


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=0, max_value=MAX_LABELS + 50), st.floats(min_value=0.1, max_value=1e3), st.integers(min_value=0, max_value=2**31))
def test_what_a_gateway_sends_stays_in_the_range_secure_aggregation_keeps(n: int, spread: float, seed: int) -> None:
    """Any labels, any inputs (parts far beyond the bound): every number a gateway masks lies in [-1, 1], inside
    SecAgg+'s clipping range, so the protocol never cuts a sum."""
    d = 4
    side, _ = _side(d)
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=spread, size=(n, d + 3))
    y = rng.integers(0, 2, size=n).astype(float)
    prior = Ability("local", 0.5, np.zeros(d), "prior")
    v = gateway_vector(round_vector(prior, side), d, d + 3, x, y)
    assert v.shape == (packed_size(d),) and np.isfinite(v).all() and np.abs(v).max() <= 1.0 <= CLIPPING_RANGE
    assert unpack(v, d).labels == min(n, MAX_LABELS)


def test_a_sum_no_fleet_of_labels_can_make_is_refused() -> None:
    prior = Ability("local", 0.5, np.zeros(4), "prior")
    garbage = np.zeros(packed_size(4))
    garbage[5] = -100.0  # a Hessian with a large negative diagonal: no labels give one
    with pytest.raises(ValueError):
        FleetFit(prior, *SD).update(unpack(garbage, 4))
    with pytest.raises(ValueError):
        read_round(np.zeros(10), 4, 7)


def test_from_a_prior_far_from_the_labels_the_fleet_still_reaches_the_pooled_fit() -> None:
    """A full Newton step from a prior that predicts outcomes near 0 (where the Hessian is flat) overshoots and
    diverges; with the line search both the pooled fit and the fleet's land on the same optimum."""
    rng = np.random.default_rng(5)
    clients = []
    for _ in range(20):
        u = rng.normal(scale=2.0, size=(10, 6))
        clients.append((u, (rng.random(10) < sigmoid(-0.4 + u @ np.array([-0.4, -0.3, -0.6, -0.1, -0.1, -0.1]))).astype(float)))
    prior = Ability("local", -3.3, np.array([0.03, -0.15, 0.1, 0.04, 0.0, -0.04]), "prior")
    pooled = fit_ability(np.vstack([u for u, _ in clients]), np.concatenate([y for _, y in clients]), prior, *SD)
    fleet = fleet_ability(prior, clients, *SD, rounds=30)
    assert abs(pooled.offset) < 3  # not diverged
    np.testing.assert_allclose([fleet.offset, *fleet.loadings], [pooled.offset, *pooled.loadings], atol=1e-5)


def test_the_first_round_only_judges_the_prior_so_nothing_is_published_from_it() -> None:
    """A round judges the point before it: after one, the fleet's best is still the prior and ``steps`` says so
    (``deploy.secure_ability`` publishes no ability then, rather than the prior under the fleet's label count)."""
    prior, clients, _ = _fleet()
    fit = FleetFit(prior, *SD)
    fit.update(total_update([client_update(u, y, fit.current()) for u, y in clients], 4))
    best = fit.best()
    assert fit.steps == 0 and best is not None and best.offset == prior.offset
    fit.update(total_update([client_update(u, y, fit.current()) for u, y in clients], 4))
    assert fit.steps == 1 and fit.best() is not None and fit.best().offset != prior.offset  # type: ignore[union-attr]


def test_secure_aggregations_rounding_costs_the_fleets_sums_nothing() -> None:
    """Each number goes as two limbs (its value on SecAgg+'s grid, then the rest scaled up): through Flower's own
    quantisation and dequantisation of a sum, the fleet's gradient, Hessian and log-loss come back to within 1e-4,
    where one limb would be off by up to a grid step times the scale a gateway (0.03 of a gradient, 0.12 of a
    Hessian entry)."""
    from flwr.common.secure_aggregation.quantization import dequantize, quantize

    from hybridgate.federated.secure import CLIPPING_RANGE, QUANTIZATION_RANGE

    prior, clients, _ = _fleet(seed=4, gateways=12, each=40)
    ups = [client_update(u, y, prior) for u, y in clients]
    vectors = [np.asarray(gateway_vector(round_vector(prior, _side(4)[0]), 4, 7, np.hstack([u, np.zeros((len(u), 3))]), y), dtype=np.float64)
               for u, y in clients]
    summed = sum(quantize([v], CLIPPING_RANGE, QUANTIZATION_RANGE)[0].astype(np.int64) for v in vectors)
    total = dequantize([summed], CLIPPING_RANGE, QUANTIZATION_RANGE)[0] - (len(vectors) - 1) * CLIPPING_RANGE
    got, exact = unpack(total, 4), total_update(ups, 4)
    assert got.labels == exact.labels
    np.testing.assert_allclose(got.grad, exact.grad, atol=1e-4)
    np.testing.assert_allclose(got.hess, exact.hess, atol=1e-4)
    assert abs(got.loss - exact.loss) < 1e-4
