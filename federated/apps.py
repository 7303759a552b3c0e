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
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg, FedProx, FedTrimmedAvg, MultiKrum, Strategy

from hybridgate.federated.checks import MAX_EXAMPLES, ReplyRejected, RequestRejected, checked_count, checked_train_request
from hybridgate.federated.node_weights import NodeWeightsSource
from hybridgate.federated.node_weights import register as register_node_weights
from hybridgate.federated.task import LocalData, UpdateRejected, check_update, local_train

log = logging.getLogger(__name__)

STRATEGIES: dict[str, type[Strategy]] = {"fedavg": FedAvg, "fedprox": FedProx, "trimmed-mean": FedTrimmedAvg, "multikrum": MultiKrum}
REFUSED = 403  # the error code of a gateway's reply to a request outside its bounds
DataFor = Callable[[Context], LocalData]
# (new weights, global weights, partition) -> sent weights; an attack with a ``count(honest, partition)`` method
# also misstates the example count (simulation.Malformed).
Attack = Callable[[np.ndarray, np.ndarray, int], np.ndarray]


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
        try:
            epochs, lr, mu = checked_train_request(cfg, start, data.dim)
        except RequestRejected as exc:
            log.warning("refusing the server's training request: %s", exc)
            return Message(Error(code=REFUSED, reason=f"the gateway refuses: {exc}"), reply_to=msg)
        new = start if len(data) == 0 else local_train(start, data, epochs=epochs, lr=lr, mu=mu)
        partition = int(context.node_config.get("partition-id", -1))
        if attack is not None:
            new = attack(new, start, partition)
        # Under differential privacy every gateway weighs the same (user-level DP); otherwise by its label count.
        weight: float = 1 if cfg.get("uniform-weight", False) else max(len(data), 1)
        misstate = getattr(attack, "count", None)  # a simulated attacker may also lie about its count
        if misstate is not None:
            weight = misstate(weight, partition)
        content = RecordDict({"arrays": ArrayRecord([new.astype(np.float32)]), "metrics": MetricRecord({"num-examples": weight})})
        return Message(content=content, reply_to=msg)

    return app


def validated(base: type[Strategy]) -> type[Strategy]:
    """``base`` with every client update checked (shape, finite, norm bound, a positive example count, capped)
    before aggregation."""

    class Validated(base):  # type: ignore[misc, valid-type]
        max_update_norm: float = 10.0
        max_examples: int = MAX_EXAMPLES
        relative_norm: float | None = None  # also refuse updates longer than this many times the round's median
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
                    # The count weights the average: a positive integer, capped, or the update does not count.
                    metrics = msg.content["metrics"]
                    metrics["num-examples"] = checked_count(metrics["num-examples"], self.max_examples)
                except (UpdateRejected, ReplyRejected, KeyError, TypeError) as exc:
                    self.rejected.append((server_round, str(exc)))
                    log.warning("round %d: update from node %s rejected: %s", server_round, msg.metadata.src_node_id, exc)
                    continue
                kept.append(msg)
            if self.relative_norm is not None:
                kept = self._within_median(server_round, kept)
            return super().aggregate_train(server_round, kept)

        def _within_median(self, server_round: int, replies: list[Message]) -> list[Message]:
            """A bound that needs no tuning: an update that moves the model more than ``relative_norm`` times as
            far as the round's median update is refused (an attacker cannot know the others' norms in advance)."""
            norms = {
                id(m): float(np.linalg.norm(m.content["arrays"].to_numpy_ndarrays()[0].astype(np.float64) - self._global))
                for m in replies if not m.has_error()
            }
            if len(norms) < 3:
                return replies
            limit = float(self.relative_norm) * float(np.median(list(norms.values())))
            out = []
            for m in replies:
                moved = norms.get(id(m))
                if moved is not None and moved > limit:
                    self.rejected.append((server_round, f"moves the model by {moved:.2f}, over {self.relative_norm} x the round's median"))
                    continue
                out.append(m)
            return out

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
    relative_norm: float | None = None  # refuse updates over this many times the round's median norm (None: off)
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
    strategy.relative_norm = plan.relative_norm
    strategy.rejected = plan.rejected
    return strategy


def _with_dp(strategy: Strategy, plan: ServerPlan) -> Strategy:
    """Flower's server-side fixed clipping + Gaussian noise, with its RDP accountant (every client, every round),
    behind :func:`checked_dp`: the accountant needs every sampled gateway's reply, so a malformed one is not
    dropped but counted as no change."""
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
    dp = checked_dp(DifferentialPrivacyServerSideFixedClipping)
    wrapped = dp(strategy, plan.dp_noise, plan.dp_clip, plan.expected_clients, accountant=accountant)
    wrapped.rejected = plan.rejected
    return wrapped


def checked_dp(base: type[Strategy]) -> type[Strategy]:
    """A DP wrapper that checks each reply before clipping: an update of the wrong shape or with non-finite values
    becomes the global vector (no change, so clipping and noise treat it like any other), and every gateway
    weighs 1 whatever count it sent (user-level DP; the wrapper would refuse the round otherwise)."""

    class CheckedDP(base):  # type: ignore[misc, valid-type]
        rejected: list[tuple[int, str]]

        def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
            current = self.current_arrays.to_numpy_ndarrays()[0].astype(np.float64)
            # Flower's clipping divides by the update's norm: "no change" is a step of 1e-9 (a gateway without labels
            # sends exactly the global vector, and that alone used to end the run with a ZeroDivisionError).
            unchanged = current.copy()
            unchanged.flat[0] += 1e-9
            kept = []
            for msg in replies:
                if not msg.has_error():
                    try:
                        update = msg.content["arrays"].to_numpy_ndarrays()[0]
                        check_update(update, current, float("inf"))
                        if not np.any(update.astype(np.float64) != current):
                            msg.content["arrays"] = ArrayRecord([unchanged])
                    except (UpdateRejected, KeyError, TypeError, IndexError) as exc:
                        self.rejected.append((server_round, str(exc)))
                        log.warning("round %d: update from node %s counted as no change: %s", server_round, msg.metadata.src_node_id, exc)
                        msg.content["arrays"] = ArrayRecord([unchanged])
                    msg.content["metrics"] = MetricRecord({"num-examples": 1})
                kept.append(msg)
            return super().aggregate_train(server_round, kept)

    CheckedDP.__name__ = f"Checked{base.__name__}"
    return CheckedDP


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
    arrays = result.arrays.to_numpy_ndarrays()
    if arrays:
        plan.final = arrays[0]
    elif plan.final is None:  # no round was aggregated (every gateway refused or failed): the model did not move
        plan.final = plan.initial
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
