"""Routers that need no embedding, for the same table: how much does the classifier add?"""

from __future__ import annotations

import numpy as np

from hybridgate.classifiers.data import RoutingData


def random_scores(data: RoutingData, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(len(data))


def length_scores(data: RoutingData) -> np.ndarray:
    """Longer prompt, more cloud: the rule of thumb most hand-written routers start from."""
    return np.array([len(p) for p in data.prompts], dtype=np.float64)


def group_prior_scores(train: RoutingData, test: RoutingData, shrinkage: float = 0.0) -> np.ndarray | None:
    """Each test row scored by its group's share of "cloud needed" in train; None when there are no groups.

    This router is told each question's subject, which the gateway never is:
    it marks how far knowing the topic alone goes.
    """
    if len(set(train.groups)) < 2:
        return None
    label = train.label.astype(np.float64)
    overall = float(label.mean())
    rates: dict[str, float] = {}
    for g in set(train.groups):
        mask = np.array([x == g for x in train.groups])
        rates[g] = (label[mask].sum() + shrinkage * overall) / (mask.sum() + shrinkage)
    return np.array([rates.get(g, overall) for g in test.groups])


def oracle_scores(data: RoutingData) -> np.ndarray:
    """The perfect router: strong minus weak correctness. Drawn beside each curve, never shipped."""
    return data.strong.astype(np.float64) - data.weak.astype(np.float64)
