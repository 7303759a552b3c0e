"""The Flower apps (Message API): a ClientApp that trains the routing head on one gateway's labels, and a
ServerApp that aggregates the updates, checking each one before it counts.

Only weights and counts travel: a client returns its new weight vector and the
number of its labelled rows, never a query, an embedding or a label.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg, FedProx, FedTrimmedAvg, MultiKrum, Strategy

from hybridgate.federated.node_weights import NodeWeightsSource
from hybridgate.federated.node_weights import register as register_node_weights
from hybridgate.federated.task import LocalData, UpdateRejected, check_update, local_train

log = logging.getLogger(__name__)

STRATEGIES: dict[str, type[Strategy]] = {"fedavg": FedAvg, "fedprox": FedProx, "trimmed-mean": FedTrimmedAvg, "multikrum": MultiKrum}
DataFor = Callable[[Context], LocalData]
Attack = Callable[[np.ndarray, np.ndarray, int], np.ndarray]  # (new weights, global weights, partition) -> sent weights


def make_client_app(data_for: DataFor, attack: Attack | None = None, node_weights: NodeWeightsSource | None = None) -> ClientApp:
    """``data_for`` gives the gateway's labels from its context (a partition in simulation, the label store in deployment);
    ``node_weights`` its learnt node-choice weights and their answer count, for the fleet's (``node_weights.py``)."""
    app = ClientApp()
    if node_weights is not None:
        register_node_weights(app, node_weights)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        start = msg.content["arrays"].to_numpy_ndarrays()[0]
        cfg = msg.content["config"]
        data = data_for(context)
        if len(data) == 0:
            new = start
        else:
            new = local_train(
                start, data, epochs=int(cfg.get("local-epochs", 20)), lr=float(cfg.get("lr", 0.5)), mu=float(cfg.get("proximal-mu", 0.0))
            )
        if attack is not None:
            new = attack(new, start, int(context.node_config.get("partition-id", -1)))
        # Under differential privacy every gateway weighs the same (user-level DP); otherwise by its label count.
        weight = 1 if cfg.get("uniform-weight", False) else max(len(data), 1)
        content = RecordDict({"arrays": ArrayRecord([new.astype(np.float32)]), "metrics": MetricRecord({"num-examples": weight})})
        return Message(content=content, reply_to=msg)

    return app


def validated(base: type[Strategy]) -> type[Strategy]:
    """``base`` with every client update checked (shape, finite, norm bound) before aggregation."""

    class Validated(base):  # type: ignore[misc, valid-type]
        max_update_norm: float = 10.0
        rejected: list[tuple[int, str]]

        def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
            self._global = arrays.to_numpy_ndarrays()[0].astype(np.float64)
            return super().configure_train(server_round, arrays, config, grid)

        def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
            kept = []
            for msg in replies:
                if msg.has_error():
                    kept.append(msg)
                    continue
                try:
                    check_update(msg.content["arrays"].to_numpy_ndarrays()[0], self._global, self.max_update_norm)
                except UpdateRejected as exc:
                    self.rejected.append((server_round, str(exc)))
                    log.warning("round %d: update from node %s rejected: %s", server_round, msg.metadata.src_node_id, exc)
                    continue
                kept.append(msg)
            return super().aggregate_train(server_round, kept)

    Validated.__name__ = f"Validated{base.__name__}"
    return Validated


@dataclass
class ServerPlan:
    """What the ServerApp runs: the strategy and its settings, the start weights, and what to call each round."""

    strategy: str = "fedavg"
    rounds: int = 10
    local_epochs: int = 20
    lr: float = 0.5
    proximal_mu: float = 0.1
    trim_beta: float = 0.2
    max_update_norm: float = 10.0
    initial: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    evaluate: Callable[[int, np.ndarray], dict[str, float]] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)
    final: np.ndarray | None = None
    expected_clients: int = 1
    dp_noise: float = 0.0  # > 0: server-side fixed clipping with Gaussian noise (Flower's DP wrapper)
    dp_clip: float = 0.5
    dp_delta: float = 1e-5
    epsilon: float | None = None


def build_strategy(plan: ServerPlan) -> Strategy:
    if plan.strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {plan.strategy!r}; use {', '.join(STRATEGIES)}")
    # With DP the clipping bounds every update, and Flower's accountant needs FedAvg's own aggregation.
    cls = STRATEGIES[plan.strategy] if plan.dp_noise > 0 else validated(STRATEGIES[plan.strategy])
    # Every round waits for every expected gateway and trains them all (the first round could otherwise
    # start with the nodes that happened to be registered, which also breaks DP's accounting).
    kwargs: dict[str, Any] = {
        "fraction_train": 1.0,
        "fraction_evaluate": 0.0,
        "min_available_nodes": plan.expected_clients,
        "min_train_nodes": plan.expected_clients,
    }
    if plan.strategy == "fedprox":
        kwargs["proximal_mu"] = plan.proximal_mu
    if plan.strategy == "trimmed-mean":
        kwargs["beta"] = plan.trim_beta
    if plan.strategy == "multikrum":
        kwargs["num_malicious_nodes"] = max(1, plan.expected_clients // 5)
        kwargs["num_nodes_to_select"] = max(1, plan.expected_clients - 2 * kwargs["num_malicious_nodes"] - 2)
    strategy = cls(**kwargs)
    if plan.dp_noise > 0:
        if plan.strategy != "fedavg":
            raise ValueError("differential privacy is supported with fedavg only (Flower's accountant requires it)")
        return _with_dp(strategy, plan)
    strategy.max_update_norm = plan.max_update_norm
    strategy.rejected = plan.rejected
    return strategy


def _with_dp(strategy: Strategy, plan: ServerPlan) -> Strategy:
    """Flower's server-side fixed clipping + Gaussian noise, with its RDP accountant (every client, every round)."""
    from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping
    from flwr.supercore.privacy_accounting import NeighboringRelation, PrivacyConfig, SamplingMethod
    from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

    accountant = RdpAccountant(
        PrivacyConfig(
            target_delta=plan.dp_delta,
            population_size=plan.expected_clients,
            neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
            sampling_method=SamplingMethod.NO_AMPLIFICATION,
        )
    )
    return DifferentialPrivacyServerSideFixedClipping(
        strategy, plan.dp_noise, plan.dp_clip, plan.expected_clients, accountant=accountant
    )


def run_plan(grid: Grid, plan: ServerPlan) -> np.ndarray:
    """The rounds of ``plan`` over ``grid``; returns the final global weights."""
    strategy = build_strategy(plan)

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        weights = arrays.to_numpy_ndarrays()[0]
        plan.final = weights
        if plan.evaluate is None:
            return None
        metrics = plan.evaluate(server_round, weights)
        plan.history.append({"round": server_round, **metrics})
        return MetricRecord({k: float(v) for k, v in metrics.items() if v is not None})

    train_config = ConfigRecord({"local-epochs": plan.local_epochs, "lr": plan.lr, "uniform-weight": plan.dp_noise > 0})
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord([plan.initial.astype(np.float32)]),
        num_rounds=plan.rounds,
        train_config=train_config,
        evaluate_fn=evaluate_fn,
    )
    plan.final = result.arrays.to_numpy_ndarrays()[0]
    accountant = getattr(strategy, "accountant", None)
    if accountant is not None:
        plan.epsilon = float(accountant.get_privacy_spent().epsilon)
    return plan.final


def make_server_app(plan: ServerPlan) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_plan(grid, plan)

    return app
