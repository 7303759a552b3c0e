"""The Flower apps (Message API): a ClientApp that trains the routing head on one gateway's labels, and a
ServerApp that aggregates the updates, checking each one before it counts.

Only weights and counts travel: a client returns its new weight vector and the
number of its labelled rows, never a query, an embedding or a label.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from hybridgate.federated import ability_share
from hybridgate.federated import secure as secagg
from hybridgate.federated.checks import RequestRejected, checked_train_request, checked_weights
from hybridgate.federated.defaults import DEFAULTS
from hybridgate.federated.node_weights import MAX_ANSWERS, NodeWeightsSource
from hybridgate.federated.node_weights import register as register_node_weights
from hybridgate.federated.strategy import SECURE_STRATEGIES, build_strategy, epsilon_spent
from hybridgate.federated.task import LocalData, local_train, scores
from hybridgate.federated.traffic import CountingGrid

log = logging.getLogger(__name__)

REFUSED = 403  # the error code of a gateway's reply to a request outside its bounds
DataFor = Callable[[Context], LocalData]
# (new weights, global weights, partition) -> sent weights; an attack with a ``count(honest, partition)`` method
# also misstates the example count (simulation.Malformed).
Attack = Callable[[np.ndarray, np.ndarray, int], np.ndarray]
# (context, embedder, vector size, shape numbers) -> (inputs, local outcomes) of the gateway's labels that say how its
# local model did, newest first, its held-out quarter left out (the gateway judges the fleet's ability on it).
AbilityLabels = Callable[[Context, str, int, int], "tuple[np.ndarray, np.ndarray]"]


def make_client_app(
    data_for: DataFor,
    attack: Attack | None = None,
    node_weights: NodeWeightsSource | None = None,
    *,
    require_secure: bool | Callable[[Context], bool] = False,
    dropout: Callable[[int, str | None], bool] | None = None,
    ability_labels: AbilityLabels | None = None,
) -> ClientApp:
    """``data_for`` gives the gateway's labels from its context (a partition in simulation, the label store in deployment);
    ``node_weights`` its learnt node-choice weights and their answer count, for the fleet's (``node_weights.py``).
    ``require_secure`` (or a function of the context that says it): the gateway answers training requests and
    statistics queries only inside SecAgg+ (``secure.py``). ``dropout(partition, stage)``: a simulated gateway that
    vanishes at that SecAgg+ stage (the dropout test). ``ability_labels``: its labels of the local model's outcomes,
    for the fleet's local ability (``ability_share.py``; none: it adds nothing to that sum)."""
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
            return _secure_reply(msg, context, data_for, attack, node_weights, ability_labels)
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


def _secure_reply(
    msg: Message, context: Context, data_for: DataFor, attack: Attack | None, node_weights: NodeWeightsSource | None,
    ability_labels: AbilityLabels | None = None,
) -> Message:
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
    elif task == "ability":
        d, dim, extra = int(cfg["ability-d"]), int(cfg["ability-dim"]), int(cfg["ability-extra"])
        if ability_labels is None:
            x, y = np.zeros((0, dim + extra)), np.zeros(0)
        else:
            x, y = ability_labels(context, str(cfg["embedder"]), dim, extra)
        vector = ability_share.gateway_vector(start, d, dim + extra, x, y)
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


@dataclass
class ServerPlan:
    """What the ServerApp runs: the strategy and its settings, the start weights, and what to call each round.
    Settings only: what a run gives back is its :class:`FederationOutcome`. The defaults are the federation's
    (``defaults.py``); ``secure`` is off here because a simulation's rows each say whether they run it."""

    strategy: str = DEFAULTS.strategy
    rounds: int = DEFAULTS.rounds
    local_epochs: int = DEFAULTS.local_epochs
    lr: float = DEFAULTS.lr
    proximal_mu: float = DEFAULTS.proximal_mu
    trim_beta: float = DEFAULTS.trim_beta
    max_update_norm: float = DEFAULTS.max_update_norm
    relative_norm: float | None = None  # refuse updates over this many times the round's median norm (None: off)
    initial: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    evaluate: Callable[[int, np.ndarray], dict[str, float]] | None = None
    expected_clients: int = 1
    dp_noise: float = DEFAULTS.dp_noise  # > 0: server-side fixed clipping with Gaussian noise (Flower's DP wrapper)
    dp_clip: float = DEFAULTS.dp_clip
    dp_delta: float = DEFAULTS.dp_delta
    # Secure aggregation (SecAgg+, ``secure.py``): the server sees the sum of each round's survivors, never one update.
    # Under DP the clipping moves to each gateway (Flower's fixedclipping_mod) and the noise goes on the unmasked sum.
    secure: bool = False
    secure_clipping_range: float = secagg.CLIPPING_RANGE
    secure_threshold_share: float = secagg.THRESHOLD_SHARE
    secure_timeout: float | None = None  # seconds a SecAgg+ stage waits for replies (None: for every gateway)
    secure_keep_seen: bool = False  # the outcome's secure log keeps the vectors the server saw (the tests' view)


@dataclass
class FederationOutcome:
    """What a run of a :class:`ServerPlan` gives back."""

    final: np.ndarray  # the global weights after the last round (the start weights when no round was aggregated)
    history: list[dict[str, Any]] = field(default_factory=list)  # the evaluation after each round, round 0 first
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (round, why) for each update refused or voided
    epsilon: float | None = None  # the privacy spent, on a DP run
    secure_log: secagg.SecureLog = field(default_factory=secagg.SecureLog)
    train_bytes: int = 0  # the training messages' serialised records, both ways, all rounds (traffic.py)
    seconds_per_round: float | None = None


Evaluate = Callable[[int, np.ndarray], "dict[str, float] | None"]


def run_plan(grid: Grid, plan: ServerPlan, context: Context | None = None) -> FederationOutcome:
    """The rounds of ``plan`` over ``grid``. A secure plan needs the ServerApp's ``context`` (Flower's SecAgg+
    workflow runs under a LegacyContext built on it)."""
    counting = CountingGrid(grid)
    history: list[dict[str, Any]] = []
    last: list[np.ndarray] = []

    def evaluate(server_round: int, weights: np.ndarray) -> dict[str, float] | None:
        counting.mark_round()
        last[:] = [weights]
        if plan.evaluate is None:
            return None
        metrics = plan.evaluate(server_round, weights)
        history.append({"round": server_round, **metrics})
        return metrics

    if plan.secure:
        if context is None:
            raise ValueError("a secure plan runs inside a ServerApp: pass its context")
        outcome = _run_secure(counting, plan, context, evaluate)
    else:
        outcome = _run_plain(counting, plan, evaluate)
    if outcome.final is None or outcome.final.size == 0:  # no round was aggregated: the last evaluated, else the start
        outcome.final = last[0] if last else plan.initial
    outcome.history = history
    outcome.train_bytes = counting.train_bytes
    outcome.seconds_per_round = counting.seconds_per_round()
    return outcome


def _run_secure(counting: CountingGrid, plan: ServerPlan, context: Context, evaluate: Evaluate) -> FederationOutcome:
    if plan.strategy not in SECURE_STRATEGIES:
        raise secagg.SecureRefused(
            f"secure aggregation hides each update, so {plan.strategy} (which must see them) cannot run under it: use fedavg or fedprox"
        )
    uniform = plan.dp_noise > 0
    config: dict[str, Any] = {"local-epochs": plan.local_epochs, "lr": plan.lr, "uniform-weight": uniform}
    if plan.strategy == "fedprox":
        config["proximal-mu"] = plan.proximal_mu
    secure_log = secagg.SecureLog(keep_seen=plan.secure_keep_seen)
    job = secagg.SecureRound(
        gateways=plan.expected_clients, rounds=plan.rounds, initial=plan.initial, config=config,
        max_weight=1.0 if uniform else float(secagg.MAX_SECURE_WEIGHT), clipping_range=plan.secure_clipping_range,
        threshold_share=plan.secure_threshold_share, timeout=plan.secure_timeout,
        noise=plan.dp_noise, clip=plan.dp_clip, delta=plan.dp_delta, evaluate=evaluate, secure_log=secure_log,
    )
    final = secagg.run_secure(counting, context, job)  # type: ignore[arg-type]
    return FederationOutcome(final=np.zeros(0) if final is None else final, epsilon=job.epsilon, secure_log=secure_log)


def _run_plain(counting: CountingGrid, plan: ServerPlan, evaluate: Evaluate) -> FederationOutcome:
    strategy = build_strategy(
        plan.strategy, clients=plan.expected_clients, proximal_mu=plan.proximal_mu, trim_beta=plan.trim_beta,
        max_update_norm=plan.max_update_norm, relative_norm=plan.relative_norm,
        dp_noise=plan.dp_noise, dp_clip=plan.dp_clip, dp_delta=plan.dp_delta,
    )

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
    return FederationOutcome(final=arrays[0] if arrays else np.zeros(0), rejected=strategy.rejected, epsilon=epsilon_spent(strategy))


def make_server_app(plan: ServerPlan, done: Callable[[FederationOutcome], None]) -> ServerApp:
    """A ServerApp that runs ``plan`` and hands its outcome to ``done`` (the simulation runs it in this process)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        done(run_plan(grid, plan, context))

    return app
