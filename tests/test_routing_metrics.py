"""The benchmark's metric code against curves worked out by hand on a four-question set."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from hybridgate.classifiers.metrics import GRID, routing_curve, routing_order

# weak right on q2 and q3, strong right on q0, q1 and q2: gains +1, +1, 0, -1.
WEAK = np.array([False, False, True, True])
STRONG = np.array([True, True, True, False])
KEYS = [hashlib.sha256(f"q{i}".encode()).hexdigest() for i in range(4)]


def _pgr_by_hand(cum_gain_at_k: list[float]) -> np.ndarray:
    """k = round(c * 4) over the grid; the gap acc_strong - acc_weak is 0.25, i.e. one question."""
    return np.array([cum_gain_at_k[int(np.rint(c * 4))] for c in GRID])


def test_perfect_router_curve_apgr_and_cpt() -> None:
    curve = routing_curve(np.array([1.0, 1.0, 0.0, -1.0]), WEAK, STRONG, KEYS)
    assert curve.acc_weak == 0.5 and curve.acc_strong == 0.75
    np.testing.assert_allclose(curve.pgr, _pgr_by_hand([0, 1, 2, 2, 1]))
    # Grid values: 13 zeros, 25 ones, 50 twos, 13 ones; trapezoids = 0.01 * (sum - (first + last) / 2).
    assert curve.apgr == pytest.approx(0.01 * (25 + 100 + 13 - 0.5))
    assert curve.cpt(0.5) == 0.13 and curve.cpt(0.8) == 0.13
    assert curve.cpt(3.0) is None


def test_reversed_router_is_the_mirror() -> None:
    curve = routing_curve(np.array([-1.0, -1.0, 0.0, 1.0]), WEAK, STRONG, KEYS)
    np.testing.assert_allclose(curve.pgr, _pgr_by_hand([0, -1, -1, 0, 1]))
    assert curve.apgr == pytest.approx(0.01 * (-50 + 13 - 0.5))
    assert curve.cpt(0.5) == 0.88 and curve.cpt(0.8) == 0.88


def test_ties_are_broken_by_the_prompt_hash_ascending() -> None:
    flat = np.zeros(4)
    order = routing_order(flat, KEYS)
    assert [KEYS[i] for i in order] == sorted(KEYS)
    by_hash = sorted(range(4), key=lambda i: KEYS[i])
    gains = (STRONG.astype(int) - WEAK.astype(int))[by_hash]
    curve = routing_curve(flat, WEAK, STRONG, KEYS)
    np.testing.assert_allclose(curve.pgr, _pgr_by_hand([0, *np.cumsum(gains).tolist()]))


def test_random_router_has_apgr_near_one_half_and_endpoints_fixed() -> None:
    rng = np.random.default_rng(7)
    n = 20_000
    weak, strong = rng.random(n) < 0.6, rng.random(n) < 0.8
    keys = [f"{i:08x}" for i in range(n)]
    curve = routing_curve(rng.random(n), weak, strong, keys)
    assert curve.pgr[0] == 0.0 and curve.pgr[-1] == pytest.approx(1.0)
    assert curve.apgr == pytest.approx(0.5, abs=0.03)
    assert 0.4 <= curve.cpt(0.5) <= 0.6  # type: ignore[operator]


def test_undefined_pgr_is_an_error() -> None:
    with pytest.raises(ValueError, match="equally accurate"):
        routing_curve(np.zeros(2), np.array([True, False]), np.array([False, True]), ["a", "b"])
