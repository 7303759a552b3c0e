"""Many gateways on one machine: the benchmark protocol run with Flower's simulation runtime.

Each simulated gateway is a Flower SuperNode whose ClientApp trains on its own
partition of the training questions; the ServerApp aggregates and, after each
round, the global head is scored on the test questions (the server only sees
weights; the test set plays the benchmark's referee). Beside it, the same head
trained centrally and each gateway's local-only head, with the same budget of
gradient steps.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from hybridgate.classifiers.data import RoutingData
from hybridgate.classifiers.metrics import routing_curve
from hybridgate.classifiers.numeric import auc
from hybridgate.federated.apps import FederationOutcome, ServerPlan, make_client_app, make_server_app
from hybridgate.federated.partition import Partition, assign
from hybridgate.federated.task import LocalData, local_train, scores

log = logging.getLogger(__name__)


class PartitionFile:
    """The ClientApp's data in simulation: one npz with every training row and its gateway, read once per worker."""

    _cache: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self, context: Any) -> LocalData:
        if self.path not in self._cache:
            with np.load(self.path, allow_pickle=False) as npz:
                self._cache[self.path] = (npz["x"], npz["label"], npz["gateway"])
        x, label, gateway = self._cache[self.path]
        mine = gateway == int(context.node_config["partition-id"])
        return LocalData(x[mine], label[mine])


@dataclass
class Flipped:
    """Poisoned gateways: their update points away from what they learned, scaled up. A scale just under a norm
    filter's (2.9 against 3 x the round's median) is the attack that passes that filter."""

    poisoned: frozenset[int]
    scale: float = 5.0
    skips_mods: bool = True  # under secure aggregation with DP, it skips its own clipping mod too

    def __call__(self, new: np.ndarray, start: np.ndarray, partition: int) -> np.ndarray:
        if partition not in self.poisoned:
            return new
        return (start - self.scale * (new - start)).astype(np.float32)

    def bypasses(self, partition: int) -> bool:
        return self.skips_mods and partition in self.poisoned


@dataclass
class Vanish:
    """Gateways that stop mid-round: at ``stage`` of SecAgg+ (by default after their keys were shared, before their
    masked vector is sent: the case whose masks the others must help remove) they raise instead of answering."""

    gone: frozenset[int]
    stage: str = "collect_masked_vectors"

    def __call__(self, partition: int, stage: str | None) -> bool:
        return partition in self.gone and stage == self.stage


@dataclass
class Malformed:
    """A malicious gateway that sends garbage: non-finite weights, and a misstated example count."""

    poisoned: frozenset[int]
    weights: float = float("nan")
    examples: float = float("nan")

    def __call__(self, new: np.ndarray, start: np.ndarray, partition: int) -> np.ndarray:
        return np.full_like(new, self.weights) if partition in self.poisoned else new

    def count(self, honest: int, partition: int) -> float:
        return self.examples if partition in self.poisoned else honest


@dataclass
class Evaluator:
    """Scores a weight vector on the test rows: the benchmark's metrics."""

    x: np.ndarray
    test: RoutingData
    keys: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.keys = self.test.sha256

    def __call__(self, _round: int, weights: np.ndarray) -> dict[str, float]:
        curve = routing_curve(scores(weights, self.x), self.test.weak, self.test.strong, self.keys)
        s = curve.summary()
        return {"apgr": float(s["apgr"] or 0.0), "cpt50": float(s["cpt50"] or 1.0), "cpt80": float(s["cpt80"] or 1.0)}


@dataclass
class SimulationResult:
    plan: ServerPlan  # what ran (with the gateways' count and the start weights filled in)
    outcome: FederationOutcome
    wall_s: float
    bytes_per_gateway_round: int  # the payload: the weight vector each way, float32
    measured_bytes_per_gateway_round: float = 0.0  # every training message's serialised records, both ways (traffic.py)


def run_federation(
    x_train: np.ndarray,
    labels: np.ndarray,
    gateways: np.ndarray,
    k: int,
    evaluator: Evaluator | None,
    plan: ServerPlan,
    *,
    attack: Flipped | Malformed | None = None,
    dropout: Vanish | None = None,
) -> SimulationResult:
    """One federation of ``k`` simulated gateways with Flower's simulation runtime (Ray)."""
    from flwr.simulation import run_simulation

    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    with tempfile.TemporaryDirectory(prefix="hybridgate-fl-") as tmp:
        path = str(Path(tmp) / "partitions.npz")
        np.savez(path, x=x_train.astype(np.float32), label=labels.astype(np.int8), gateway=gateways.astype(np.int64))
        initial = plan.initial if plan.initial.size else np.zeros(x_train.shape[1] + 1, dtype=np.float32)
        plan = replace(plan, evaluate=evaluator, expected_clients=k, initial=initial)
        outcomes: list[FederationOutcome] = []
        started = time.perf_counter()
        # One BLAS thread: the ServerApp scores on a thread of its own beside Ray's workers, and a
        # multi-threaded OpenBLAS was seen spinning forever there on this 2-core machine.
        with threadpool_limits(limits=1):
            run_simulation(
                server_app=make_server_app(plan, outcomes.append),
                client_app=make_client_app(PartitionFile(path), attack, require_secure=plan.secure, dropout=dropout),
                num_supernodes=k,
                backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": {"num_cpus": os.cpu_count() or 1, "include_dashboard": False, "log_to_driver": False}},
            )
        wall = time.perf_counter() - started
    # Each round a gateway receives the global vector and sends one back, float32 each way.
    if not outcomes:
        raise RuntimeError("the simulated federation ended without an outcome (its ServerApp failed: see the log above)")
    outcome = outcomes[0]
    return SimulationResult(plan, outcome, wall, int(2 * plan.initial.size * 4), outcome.train_bytes / max(k * plan.rounds, 1))


def central_and_local(
    x_train: np.ndarray, labels: np.ndarray, gateways: np.ndarray, k: int, evaluator: Evaluator, epochs: int, lr: float,
    start: np.ndarray | None = None,
) -> tuple[dict[str, float], list[dict[str, float]]]:
    """The same head trained on all rows together, and on each gateway's rows alone, from ``start`` (zeros: a
    head from scratch; the identity correction: the shipped router)."""
    zero = np.zeros(x_train.shape[1] + 1, dtype=np.float32) if start is None else start
    central = evaluator(0, local_train(zero, LocalData(x_train, labels), epochs=epochs, lr=lr))
    local = []
    for g in range(k):
        mine = gateways == g
        if mine.sum() < 2 or labels[mine].min() == labels[mine].max():
            continue
        local.append({"gateway": g, **evaluator(0, local_train(zero, LocalData(x_train[mine], labels[mine]), epochs=epochs, lr=lr))})
    return central, local


def poisoned_gateways(k: int, share: float, seed: int = 0) -> frozenset[int]:
    rng = np.random.default_rng(seed)
    n = int(round(k * share))
    return frozenset(int(i) for i in rng.choice(k, size=n, replace=False)) if n else frozenset()


__all__: Sequence[str] = [
    "Evaluator",
    "Flipped",
    "PartitionFile",
    "SimulationResult",
    "Vanish",
    "central_and_local",
    "poisoned_gateways",
    "run_federation",
]


def personalize(
    weights: np.ndarray,
    x_train: np.ndarray,
    labels: np.ndarray,
    gateways: np.ndarray,
    train: RoutingData,
    test: RoutingData,
    x_test: np.ndarray,
    k: int,
    how: Partition,
    *,
    epochs: int,
    lr: float,
    mu: float = 0.1,
) -> dict[str, float]:
    """Each gateway adapts the global head on four fifths of its rows, keeps the adapted one only if it ranks
    its own held-out fifth better (ROC AUC), and both are scored on the test questions of that gateway's kind."""
    test_gateway = assign(test.prompts, test.groups, k, how)
    held = np.array([int(h[:8], 16) % 5 == 0 for h in train.sha256])
    own_global: list[float] = []
    own_personal: list[float] = []
    adopted = 0
    for g in range(k):
        mine = gateways == g
        adapt, check = mine & ~held, mine & held
        rows = test_gateway == g
        if adapt.sum() < 2 or not rows.any():
            continue
        adapted = local_train(weights, LocalData(x_train[adapt], labels[adapt]), epochs=epochs, lr=lr, mu=mu)
        a_new = auc(scores(adapted, x_train[check]), labels[check]) if check.any() else None
        a_old = auc(scores(weights, x_train[check]), labels[check]) if check.any() else None
        chosen = adapted if a_new is not None and a_old is not None and a_new >= a_old else weights
        adopted += int(chosen is adapted)
        sub = test.take(rows)
        try:
            own_global.append(routing_curve(scores(weights, x_test[rows]), sub.weak, sub.strong, sub.sha256).apgr)
            own_personal.append(routing_curve(scores(chosen, x_test[rows]), sub.weak, sub.strong, sub.sha256).apgr)
        except ValueError:  # both models equally accurate on these questions: no gap to recover
            continue
    return {
        "apgr_global_own": round(float(np.mean(own_global)), 4) if own_global else float("nan"),
        "apgr_personalized_own": round(float(np.mean(own_personal)), 4) if own_personal else float("nan"),
        "gateways_adopted": adopted,
        "gateways_scored": len(own_global),
    }
