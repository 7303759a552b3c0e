"""Federating a correction on top of the router a gateway ships with, so that many gateways' few labels add up.

The shipped router's score is not retrained: each gateway holds labels of its
own traffic (query vectors, "the cloud was needed", and the shipped router's
score when the answer was given — what the label store keeps) and learns the
same correction as the on-device adapter (:mod:`hybridgate.classifiers.adapt`),
``z = a * z_router + b + v . vector``. That is a logistic head on the inputs
``[z_router, vector]`` started from the identity (``a = 1``, everything else 0),
so the federation is the same FedAvg of one small vector as the routing head's;
the result can be published beside the shipped router as its adapter.

Four figures for one setting: the shipped router unchanged, each gateway
adapting alone on its own labels (the on-device adapter), the fleet adapting
together, and the same correction trained on all the fleet's labels pooled. The transfer setting is the routing benchmark's: the shipped router is
fitted without a fold's subjects, and the gateways' traffic comes from them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from hybridgate.classifiers.adapt import Adapter, fit_adapter, logit
from hybridgate.classifiers.data import RoutingData
from hybridgate.classifiers.metrics import routing_curve
from hybridgate.classifiers.model import RouterModel
from hybridgate.classifiers.protocols import FOLDS, Bench
from hybridgate.classifiers.training import fit_router, out_of_fold_scores
from hybridgate.federated.apps import ServerPlan
from hybridgate.federated.simulation import Evaluator, SimulationResult, run_federation
from hybridgate.federated.task import LocalData, local_train, scores


def correction_rows(router_scores: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """What the correction's logistic head reads for each query: ``[logit(the router's score), vector]``."""
    return np.hstack([logit(router_scores).astype(np.float32)[:, None], vectors.astype(np.float32)])


def identity(dim: int) -> np.ndarray:
    """The weights of the correction that changes nothing (a = 1 on the router's log-odds, 0 elsewhere)."""
    return Adapter.identity(dim).weights()


@dataclass
class Setting:
    """One fleet: the shipped router's scores and the vectors of the gateways' labelled rows and of the test rows."""

    score_train: np.ndarray  # the shipped router's probability for each labelled row
    x_train: np.ndarray
    labels: np.ndarray
    gateways: np.ndarray  # the gateway of each labelled row
    k: int
    score_test: np.ndarray
    x_test: np.ndarray
    test: RoutingData


def _apgr(scores: np.ndarray, test: RoutingData) -> float:
    return float(routing_curve(scores, test.weak, test.strong, test.sha256).apgr)


def federate(s: Setting, plan: ServerPlan) -> tuple[float, SimulationResult]:
    """The fleet's correction federated under ``plan`` (from the identity): its APGR on the test rows, and the run."""
    plan = replace(plan, initial=identity(s.x_train.shape[1]))
    res = run_federation(
        correction_rows(s.score_train, s.x_train), s.labels, s.gateways, s.k, Evaluator(correction_rows(s.score_test, s.x_test), s.test), plan
    )
    history = res.outcome.history
    return (float(history[-1]["apgr"]) if history else float("nan")), res


def fleet_adaptation(s: Setting, plan: ServerPlan) -> dict[str, Any]:
    shipped = _apgr(s.score_test, s.test)
    alone = []
    for g in range(s.k):
        mine = s.gateways == g
        if mine.any():
            adapter = fit_adapter(s.score_train[mine], s.x_train[mine], s.labels[mine])
            alone.append(_apgr(adapter.apply(s.score_test, s.x_test), s.test))
    federated, res = federate(s, plan)
    # The same correction trained on every gateway's labels pooled, with as many steps as the federation took.
    rows = correction_rows(s.score_train, s.x_train)
    pooled = local_train(identity(s.x_train.shape[1]), LocalData(rows, s.labels), epochs=plan.rounds * plan.local_epochs, lr=plan.lr)
    central = _apgr(scores(pooled, correction_rows(s.score_test, s.x_test)), s.test)
    per_gateway = np.bincount(s.gateways, minlength=s.k)
    return {
        "shipped": round(shipped, 4),
        "alone": round(float(np.mean(alone)), 4) if alone else float("nan"),
        "alone_worst": round(float(np.min(alone)), 4) if alone else float("nan"),
        "federated": round(float(federated), 4),
        "central": round(central, 4),
        "gateways": s.k,
        "labels_per_gateway": [int(per_gateway.min()), int(per_gateway.max())],
        "wall_s": round(res.wall_s, 1),
        "bytes_per_gateway_round": res.bytes_per_gateway_round,
    }


@dataclass
class Shipped:
    """The router that ships, fitted on the training split, and what a gateway's label would record as its score:
    for each training query the score of the router fitted without it (5 folds), since a gateway's traffic is
    new to the router; the test queries are scored by the router itself."""

    model: RouterModel
    train_scores: np.ndarray
    test_scores: np.ndarray

    def inputs(self, x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The correction's rows ``[logit(score), vector]`` for the training and the test queries."""
        return correction_rows(self.train_scores, x_train), correction_rows(self.test_scores, x_test)


def shipped_in_distribution(train: RoutingData, x_train: np.ndarray, test: RoutingData, x_test: np.ndarray, embedder: str) -> Shipped:
    model = fit_router(train, x_train, "blend", None, embedder=embedder)
    held = out_of_fold_scores(train, x_train, "blend", None, embedder=embedder, features=False)
    return Shipped(model, held, model.score(x_test, list(test.prompts)))


def subdivide(gateways: np.ndarray, factor: int, keys: list[str]) -> np.ndarray:
    """Each gateway's rows dealt to ``factor`` smaller gateways by a hash of the row (households of the same kind of
    use): more gateways, the partition's skew kept, for user-level DP where each gateway is one vote."""
    if factor <= 1:
        return gateways
    sub = np.array([int(k[:8], 16) % factor for k in keys], dtype=np.int64)
    return gateways * factor + sub


def spread(n: int, per_gateway: int, seed: int = 0) -> tuple[np.ndarray, int]:
    """``n`` labelled rows dealt to gateways of about ``per_gateway`` labels each, at random (same seed, same deal)."""
    k = max(2, n // per_gateway)
    order = np.random.default_rng(seed).permutation(n)
    gateways = np.empty(n, dtype=np.int64)
    gateways[order] = np.arange(n) % k
    return gateways, k


def transfer_fleets(rows: RoutingData, vectors: np.ndarray, embedder: str, per_gateway: int) -> Iterator[tuple[int, Setting]]:
    """The transfer protocol's folds as fleets: the shipped router (the default head) fitted without a fold's
    subjects, that fold's labelled questions dealt to gateways of about ``per_gateway`` labels each, and its
    test questions to score. Needs the five folds (``Bench(rows).has_folds``)."""
    bench = Bench(rows)
    for k in range(FOLDS):
        fit_rows, test_rows = bench.fold_masks(k)
        shipped = fit_router(rows.take(fit_rows), vectors[fit_rows], "blend", None, embedder=embedder, calibrate=False)
        new = bench.train & (bench.fold == k)
        test = rows.take(test_rows)
        gateways, k_gateways = spread(int(new.sum()), per_gateway, seed=k)
        yield k, Setting(
            shipped.score(vectors[new], [p for p, m in zip(rows.prompts, new, strict=True) if m]), vectors[new], rows.label[new],
            gateways, k_gateways, shipped.score(vectors[test_rows], list(test.prompts)), vectors[test_rows], test,
        )
