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

from hybridgate.federated import secure as secagg
from hybridgate.federated.checks import (
    MAX_EXAMPLES,
    ReplyRejected,
    RequestRejected,
    checked_count,
    checked_train_request,
    checked_weights,
)
from hybridgate.federated.node_weights import MAX_ANSWERS, NodeWeightsSource
from hybridgate.federated.node_weights import register as register_node_weights
from hybridgate.federated.task import LocalData, UpdateRejected, check_update, local_train, scores
from hybridgate.federated.traffic import CountingGrid

log = logging.getLogger(__name__)

STRATEGIES: dict[str, type[Strategy]] = {"fedavg": FedAvg, "fedprox": FedProx, "trimmed-mean": FedTrimmedAvg, "multikrum": MultiKrum}
SECURE_STRATEGIES = ("fedavg", "fedprox")  # the robust ones must see each update, which secure aggregation hides
REFUSED = 403  # the error code of a gateway's reply to a request outside its bounds
DataFor = Callable[[Context], LocalData]
# (new weights, global weights, partition) -> sent weights; an attack with a ``count(honest, partition)`` method
# also misstates the example count (simulation.Malformed).
Attack = Callable[[np.ndarray, np.ndarray, int], np.ndarray]


def make_client_app(
    data_for: DataFor,
    attack: Attack | None = None,
    node_weights: NodeWeightsSource | None = None,
    *,
    require_secure: bool | Callable[[Context], bool] = False,
    dropout: Callable[[int, str | None], bool] | None = None,
) -> ClientApp:
    """``data_for`` gives the gateway's labels from its context (a partition in simulation, the label store in deployment);
    ``node_weights`` its learnt node-choice weights and their answer count, for the fleet's (``node_weights.py``).
    ``require_secure`` (or a function of the context that says it): the gateway answers training requests and
    statistics queries only inside SecAgg+ (``secure.py``). ``dropout(partition, stage)``: a simulated gateway that
    vanishes at that SecAgg+ stage (the dropout test)."""
    bypasses = getattr(attack, "bypasses", None)

    def gate(msg: Message, context: Context, call_next: Callable[[Message, Context], Message]) -> Message:
        required = require_secure(context) if callable(require_secure) else require_secure
        partition = int(context.node_config.get("partition-id", -1))
        stage = secagg.stage_of(msg)
        mod = secagg.secure_gate(required, (lambda ctxt: bool(bypasses(int(ctxt.node_config.get("partition-id", -1))))) if bypasses else None)
        reply = mod(msg, context, call_next)
        if dropout is not None and dropout(partition, stage):  # it did the stage's work, and is gone before it answers
            raise ConnectionAbortedError(f"gateway {partition} vanished at stage {stage}")
        return reply

    app = ClientApp(mods=[gate])
    if node_weights is not None:
        register_node_weights(app, node_weights)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        if "fitins.parameters" in msg.content.array_records:  # a SecAgg+ round (the legacy fit records)
            return _secure_reply(msg, context, data_for, attack, node_weights)
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


def _secure_reply(msg: Message, context: Context, data_for: DataFor, attack: Attack | None, node_weights: NodeWeightsSource | None) -> Message:
    """The vector a gateway puts into a SecAgg+ round, as a legacy FitRes (what Flower's mods read): its trained
    weights, or one of the fleet's other sums (``secure.TASK``). A request outside its bounds raises: the gateway
    drops out of the round rather than answer it."""
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.compat.common import recorddict_compat as compat

    ins = compat.recorddict_to_fitins(msg.content, keep_input=True)
    start = parameters_to_ndarrays(ins.parameters)[0]
    cfg = ins.config
    task = str(cfg.get(secagg.TASK, "train"))
    partition = int(context.node_config.get("partition-id", -1))
    weight = 1
    if task == "node-weights":
        vector = _node_weights_vector(context, node_weights, int(cfg.get("min-answers", 20)))
    elif task == "score-histogram":
        data = data_for(context)
        weights = checked_weights(start, data.dim)
        share = min(len(data), secagg.MAX_SECURE_WEIGHT) / secagg.MAX_SECURE_WEIGHT if len(data) >= secagg.MIN_HISTOGRAM_LABELS else 0.0
        hist = secagg.score_histogram(scores(weights, data.x)) if share else np.zeros(secagg.HISTOGRAM_BINS)
        vector = secagg.weighted_vector(share, hist)
    elif task == "train":
        data = data_for(context)
        epochs, lr, mu = checked_train_request(cfg, start, data.dim)
        vector = start if len(data) == 0 else local_train(start, data, epochs=epochs, lr=lr, mu=mu)
        if attack is not None:
            vector = attack(vector, start, partition)
        if not np.any(np.asarray(vector, dtype=np.float64) != start):
            # Flower's clipping divides by the update's norm: "no change" (a gateway without labels) is the smallest
            # float32 step, or the gateway would raise, drop out, and enough of them would stall the round (seen at 100).
            vector = start.astype(np.float32).copy()
            vector.flat[0] = np.nextafter(vector.flat[0], np.float32(np.inf))
        if not cfg.get("uniform-weight", False):  # the count rides masked inside the sum, capped at the protocol's max_weight
            weight = min(max(len(data), 1), secagg.MAX_SECURE_WEIGHT)
    else:
        raise RequestRejected(f"unknown secure task {task!r}")
    fitres = FitRes(Status(Code.OK, ""), ndarrays_to_parameters([np.asarray(vector, dtype=np.float32)]), weight, {})
    return Message(compat.fitres_to_recorddict(fitres, keep_input=False), reply_to=msg)


def _node_weights_vector(context: Context, source: NodeWeightsSource | None, min_answers: int) -> np.ndarray:
    """This gateway's node weights scaled into [0, 1] by their bounds, and its answer count, behind a weight share of
    1 (0 when it learnt from too few answers or has none): see ``secure.weighted_vector``."""
    from hybridgate.classifiers.node_weights import LOWER, UPPER

    got = source(context) if source is not None else None
    if got is None or got[1] < min_answers:
        return secagg.weighted_vector(0.0, np.zeros(len(LOWER) + 1))
    weights, answers = got
    scaled = (weights.array() - LOWER) / (UPPER - LOWER)
    return secagg.weighted_vector(1.0, np.concatenate([scaled, [min(answers, MAX_ANSWERS) / MAX_ANSWERS]]))


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
    # Secure aggregation (SecAgg+, ``secure.py``): the server sees the sum of each round's survivors, never one update.
    # Under DP the clipping moves to each gateway (Flower's fixedclipping_mod) and the noise goes on the unmasked sum.
    secure: bool = False
    secure_clipping_range: float = secagg.CLIPPING_RANGE
    secure_threshold_share: float = secagg.THRESHOLD_SHARE
    secure_timeout: float | None = None  # seconds a SecAgg+ stage waits for replies (None: for every gateway)
    secure_log: secagg.SecureLog = field(default_factory=secagg.SecureLog)
    train_bytes: int = 0  # the training messages' serialised records, both ways, all rounds (traffic.py)
    seconds_per_round: float | None = None


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


def run_plan(grid: Grid, plan: ServerPlan, context: Context | None = None) -> np.ndarray:
    """The rounds of ``plan`` over ``grid``; returns the final global weights. A secure plan needs the ServerApp's
    ``context`` (Flower's SecAgg+ workflow runs under a LegacyContext built on it)."""
    counting = CountingGrid(grid)
    try:
        if plan.secure:
            if context is None:
                raise ValueError("a secure plan runs inside a ServerApp: pass its context")
            return _run_secure(counting, plan, context)
        return _run_plain(counting, plan)
    finally:
        plan.train_bytes = counting.train_bytes
        plan.seconds_per_round = counting.seconds_per_round()


def _evaluate_into(plan: ServerPlan, counting: CountingGrid) -> Callable[[int, np.ndarray], dict[str, float] | None]:
    def evaluate(server_round: int, weights: np.ndarray) -> dict[str, float] | None:
        counting.mark_round()
        plan.final = weights
        if plan.evaluate is None:
            return None
        metrics = plan.evaluate(server_round, weights)
        plan.history.append({"round": server_round, **metrics})
        return metrics

    return evaluate


def _run_secure(counting: CountingGrid, plan: ServerPlan, context: Context) -> np.ndarray:
    if plan.strategy not in SECURE_STRATEGIES:
        raise secagg.SecureRefused(
            f"secure aggregation hides each update, so {plan.strategy} (which must see them) cannot run under it: use fedavg or fedprox"
        )
    uniform = plan.dp_noise > 0
    config: dict[str, Any] = {"local-epochs": plan.local_epochs, "lr": plan.lr, "uniform-weight": uniform}
    if plan.strategy == "fedprox":
        config["proximal-mu"] = plan.proximal_mu
    job = secagg.SecureRound(
        gateways=plan.expected_clients, rounds=plan.rounds, initial=plan.initial, config=config,
        max_weight=1.0 if uniform else float(secagg.MAX_SECURE_WEIGHT), clipping_range=plan.secure_clipping_range,
        threshold_share=plan.secure_threshold_share, timeout=plan.secure_timeout,
        noise=plan.dp_noise, clip=plan.dp_clip, delta=plan.dp_delta, evaluate=_evaluate_into(plan, counting), secure_log=plan.secure_log,
    )
    final = secagg.run_secure(counting, context, job)  # type: ignore[arg-type]
    plan.epsilon = job.epsilon
    plan.final = final if final is not None else (plan.final if plan.final is not None else plan.initial)
    return plan.final


def _run_plain(counting: CountingGrid, plan: ServerPlan) -> np.ndarray:
    strategy = build_strategy(plan)
    evaluate = _evaluate_into(plan, counting)

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        metrics = evaluate(server_round, arrays.to_numpy_ndarrays()[0])
        return None if metrics is None else MetricRecord({k: float(v) for k, v in metrics.items() if v is not None})

    train_config = ConfigRecord({"local-epochs": plan.local_epochs, "lr": plan.lr, "uniform-weight": plan.dp_noise > 0})
    result = strategy.start(
        grid=counting,  # type: ignore[arg-type]
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
        run_plan(grid, plan, context)

    return app
