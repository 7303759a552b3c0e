"""The Flower apps for a real federation: gateways as SuperNodes, a SuperLink, ``flwr run``.

What the fleet trains is a correction on top of the router its gateways run now
(the *base*: the shipped default, or the fleet's last published router), the
same ``z = a * z_router + b + v . vector`` as the on-device adapter
(:mod:`hybridgate.federated.fleet_adaptation`). A gateway's labels keep the
router's own score and version when the answer was given, so ``client_app``
trains on the labels made under the base version only, as rows
``[logit(base score), vector]``. It reads them from the gateway on the same
device (``GET /v1/hybridgate/labels`` on loopback; ``gateway-url`` in the
SuperNode's node config) or from an exported file (``labels-file``: an npz of
``x``, ``label``, ``base_score``, ``router_version``), so the labels never leave
the device: only weights and counts go to the SuperLink. After the last round it
also answers one query with quantiles of the corrected scores on its labels, so
the server can calibrate thresholds without seeing any score, and with its
gateway's node-choice weights (``GET /v1/hybridgate/nodes``, or
``node-weights-file``). ``server_app`` runs the strategy named in the run
config, composes the new correction with the base router's own, pools the node
weights (``node_weights.py``) and publishes the result as a router folder that
gateways hot-reload: the base's head and arrays, the fleet's correction, a new
version. A gateway takes it only if it ranks that gateway's own labels at least
as well (``serving/router_reload.py``).

With an outcomes router that does not know the fleet's local model (run config
``local-model``), the server also fits that model's ability from every gateway's
labels of it, in ``ability-rounds`` Newton rounds of SecAgg+ sums
(:func:`secure_ability`, ``ability_share.py``), and publishes it beside the
router (``local_ability``); each gateway judges it on labels it kept home
(``serving/router_adapt.py``).

Both are referenced from the app folder that ``hybridgate fl server`` writes
(``hybridgate.federated.deploy:server_app`` and ``...:client_app``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from flwr.app import ArrayRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp

from hybridgate.classifiers.adapt import Adapter
from hybridgate.classifiers.artifact import load_router, save_router
from hybridgate.classifiers.local_labels import SD_UNKNOWN, local_outcomes
from hybridgate.classifiers.model import RouterModel, calibration
from hybridgate.classifiers.node_weights import NodeWeights
from hybridgate.classifiers.outcome_head import LearnsLocal
from hybridgate.classifiers.pair_score import Ability
from hybridgate.federated import ability_share, node_weights, secure
from hybridgate.federated.apps import REFUSED, ServerPlan, make_client_app, run_plan
from hybridgate.federated.checks import RequestRejected, checked_weights, pooled_quantiles
from hybridgate.federated.defaults import DEFAULTS
from hybridgate.federated.fleet_adaptation import correction_rows, identity
from hybridgate.federated.task import LocalData, scores

log = logging.getLogger(__name__)
MIN_QUANTILE_LABELS = 20
KEY_ENV = "HYBRIDGATE_API_KEY"


def gateway_headers(cfg: Any) -> dict[str, str]:
    """The gateway's key for its own endpoints: from the environment, or a file the node config names. Never from
    the node config itself, which is a command-line argument of the SuperNode, readable by every local user."""
    if "api-key" in cfg:
        raise ValueError(f"a key in the node config shows in the process list: set {KEY_ENV} or pass --api-key-file")
    key = os.environ.get(KEY_ENV)
    if "api-key-file" in cfg:
        key = Path(str(cfg["api-key-file"])).read_text(encoding="utf-8").strip()
    return {"Authorization": f"Bearer {key}"} if key else {}


def from_gateway(cfg: Any, path: str, **params: Any) -> Any:
    """What the device's own gateway answers at ``path`` (``gateway-url``, on loopback), with its key."""
    url = str(cfg.get("gateway-url", "http://127.0.0.1:8080")).rstrip("/")
    return httpx.get(f"{url}{path}", params=params, headers=gateway_headers(cfg), timeout=30).json()


def gateway_labels(context: Context) -> LocalData:
    """This device's labels made under the base router, as correction rows ``[logit(base score), vector]``: from
    its gateway over loopback, or from a file. Labels made under another router version (or before labels kept
    the router's score) say nothing about the base's scores, so they are left out."""
    cfg = context.node_config
    base_version = str(context.run_config.get("base-version", ""))
    if not base_version:
        raise ValueError("the run names no base-version: which router's scores should the correction be trained on?")
    if "labels-file" in cfg:
        base, vectors, labels = labels_file(Path(str(cfg["labels-file"])), base_version)
    else:
        embedder = str(context.run_config.get("embedder", cfg.get("embedder", DEFAULTS.embedder)))
        rows = [
            r for r in from_gateway(cfg, "/v1/hybridgate/labels", limit=10_000)["data"]
            if r.get("embedder") == embedder and r.get("router_version") == base_version
            and isinstance(r.get("base_score"), (int, float)) and r.get("label") in (0, 1)
        ]
        if not rows:
            return LocalData(np.zeros((0, 1), dtype=np.float32), np.zeros(0, dtype=np.int8))
        base = np.asarray([r["base_score"] for r in rows], dtype=np.float64)
        vectors = np.asarray([r["vector"] for r in rows], dtype=np.float32)
        labels = np.asarray([r["label"] for r in rows], dtype=np.int8)
    if len(labels) == 0:
        return LocalData(np.zeros((0, 1), dtype=np.float32), np.zeros(0, dtype=np.int8))
    return LocalData(correction_rows(base, vectors), labels)


LABELS_FILE_ARRAYS = ("x", "label", "base_score", "router_version")


def labels_file(path: Path, base_version: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(base scores, vectors, labels) of an exported labels file, the rows made under ``base_version`` (all rows
    when None); a ValueError that names the file and what is wrong with it otherwise."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files if k in LABELS_FILE_ARRAYS}
    except (OSError, EOFError, ValueError, AttributeError) as exc:  # a text file reads as "pickled data"; a .npy has no .files
        raise ValueError(f"{path}: not a readable npz file ({exc})") from None
    missing = [k for k in LABELS_FILE_ARRAYS if k not in arrays]
    if missing:
        raise ValueError(f"{path}: a labels file holds {', '.join(LABELS_FILE_ARRAYS)}; missing {', '.join(missing)}")
    x, label, base, version = (arrays[k] for k in LABELS_FILE_ARRAYS)
    n = len(label)
    version = np.broadcast_to(np.asarray(version).astype(str), (n,))
    if x.ndim != 2 or x.shape[0] != n or base.shape != (n,):
        raise ValueError(f"{path}: x, label and base_score must have one row per label")
    if not (np.isin(label, (0, 1)).all() and np.isfinite(base).all() and np.isfinite(x).all()) or ((base < 0) | (base > 1)).any():
        raise ValueError(f"{path}: labels must be 0 or 1, base scores in [0, 1], vectors finite")
    mine = np.ones(n, dtype=bool) if base_version is None else version == base_version
    return base[mine].astype(np.float64), x[mine].astype(np.float32), label[mine].astype(np.int8)


def gateway_node_weights(context: Context) -> tuple[NodeWeights, int] | None:
    """This device's node-choice weights: from a file saved from its gateway, or from the gateway on loopback. A
    device that trains from an exported labels file and names no weights file has none to send."""
    cfg = context.node_config
    if "node-weights-file" in cfg:
        return node_weights.file_source(str(cfg["node-weights-file"]))
    if "labels-file" in cfg:
        return None
    return node_weights.from_description(from_gateway(cfg, "/v1/hybridgate/nodes"))


def gateway_local_outcomes(context: Context, embedder: str, dim: int, extra: int) -> tuple[np.ndarray, np.ndarray]:
    """This device's labels that say how its local model did, as (inputs, outcomes), for the fleet's local ability:
    from its gateway over loopback, read as the gateway reads them (``classifiers/local_labels.py``), without the
    held-out quarter the gateway judges the fleet's ability on. An exported labels file keeps no outcomes of the local
    model: such a device adds nothing to that sum."""
    cfg = context.node_config
    if "labels-file" in cfg:
        return np.zeros((0, dim + extra)), np.zeros(0)
    x, y, held = local_outcomes(from_gateway(cfg, "/v1/hybridgate/labels", limit=10_000)["data"], embedder, dim, extra)
    return x[~held], y[~held]


def requires_secure(context: Context) -> bool:
    """A gateway sends its update and statistics only inside SecAgg+ unless its SuperNode was started with
    ``allow-plain`` (``fl client --allow-plain``): a server cannot quietly downgrade it."""
    return not bool(context.node_config.get("allow-plain", False))


client_app = make_client_app(
    gateway_labels, node_weights=gateway_node_weights, require_secure=requires_secure, ability_labels=gateway_local_outcomes
)


@client_app.query()
def _score_quantiles(msg: Message, context: Context) -> Message:
    """Quantiles of the new model's scores on this gateway's labels: 101 numbers, never a score or a label. The
    vector to score with is checked first (a crafted one could read the labels out, one query at a time)."""
    data = gateway_labels(context)
    try:
        weights = checked_weights(msg.content["arrays"].to_numpy_ndarrays()[0], data.dim)
    except (RequestRejected, KeyError, IndexError) as exc:
        return Message(Error(code=REFUSED, reason=f"the gateway refuses: {exc}"), reply_to=msg)
    if len(data) < MIN_QUANTILE_LABELS:  # quantiles of a handful of scores would be those scores
        return Message(content=RecordDict({"metrics": MetricRecord({"quantiles": [], "num-examples": 0})}), reply_to=msg)
    q = np.quantile(scores(weights, data.x), np.linspace(0, 1, 101)).tolist()
    return Message(content=RecordDict({"metrics": MetricRecord({"quantiles": q, "num-examples": len(data)})}), reply_to=msg)


def _pooled_quantiles(grid: Grid, weights: np.ndarray) -> list[float] | None:
    """Each gateway's score quantiles under the final model, checked, averaged by (capped) label count."""
    nodes = list(grid.get_node_ids())
    messages = [
        Message(content=RecordDict({"arrays": ArrayRecord([weights.astype(np.float32)])}), dst_node_id=n, message_type="query")
        for n in nodes
    ]
    replies = []
    for reply in grid.send_and_receive(messages, timeout=120):
        if reply.has_error() or "metrics" not in reply.content.metric_records:
            continue
        m = reply.content["metrics"]
        if m.get("num-examples"):  # a gateway with too few labels sends none
            replies.append((m.get("quantiles"), m.get("num-examples")))
    pooled, refused = pooled_quantiles(replies)
    for why in refused:
        log.warning("score quantiles refused: %s", why)
    return pooled


def secure_node_weights(grid: Grid, context: Context, gateways: int, min_answers: int) -> tuple[NodeWeights | None, dict[str, Any]]:
    """The fleet's node weights as a secure mean (SecAgg+): the unweighted mean of the gateways that learnt from at
    least ``min_answers`` answers, and their count and mean answers; no gateway's weights reach the server. A mean,
    not the plain path's median: robust statistics need the individual values (docs/federated.md)."""
    from hybridgate.classifiers.node_weights import LOWER, UPPER

    job = secure.SecureRound(gateways=gateways, rounds=1, initial=np.zeros(1, dtype=np.float32),
                             config={secure.TASK: "node-weights", "min-answers": min_answers}, max_weight=1.0)
    average = secure.run_secure(grid, context, job)
    survivors = job.secure_log.survivors[-1] if job.secure_log.survivors else 0
    mean, used = (None, 0.0) if average is None else secure.weighted_mean(average, survivors)
    report = {"asked": gateways, "replied": survivors, "used": int(round(used)), "answers": 0}
    if mean is None or used < 0.5:
        return None, report
    report["answers"] = int(round(mean[-1] * node_weights.MAX_ANSWERS * used))
    return NodeWeights.from_array(LOWER + mean[:-1] * (UPPER - LOWER)), report


def secure_ability(grid: Grid, context: Context, gateways: int, base: RouterModel, local_model: str, rounds: int) -> tuple[Ability | None, dict[str, Any]]:
    """The local model's ability the fleet fits from every gateway's labels (``ability_share.py``): up to ``rounds``
    rounds of a line-searched Newton fit, each from one SecAgg+ sum of the gateways' log-loss, gradients and Hessians
    at the fleet's ability, so the server sees the fleet's sums and no gateway's. None (and why, in the report) when the router scores no pair, the
    model is in its catalogue (its ability is known), or no gateway has a label of it."""
    head = base.head
    if not isinstance(head, LearnsLocal):
        return None, {"skipped": f"the router's {head.kind} head scores no pair: no local ability to learn"}
    prior = head.with_pair(local_model or None, None).prior_local()
    if prior.origin == "catalogue":
        return None, {"skipped": f"{prior.name} is in the router's catalogue: its ability is known"}
    om = head.model
    side = ability_share.QuerySide(om.x_mean.astype(np.float64), om.x_scale.astype(np.float64), om.w.astype(np.float64))
    d, inputs = len(prior.loadings), len(om.x_mean)
    config: dict[str, Any] = {secure.TASK: "ability", "ability-d": d, "ability-dim": base.dim, "ability-extra": inputs - base.dim,
                              "embedder": base.embedder}
    fit = ability_share.FleetFit(prior, *SD_UNKNOWN)
    report: dict[str, Any] = {"name": prior.name, "rounds": 0, "gateways": 0, "labels": 0}
    for _ in range(rounds):
        job = secure.SecureRound(gateways=gateways, rounds=1, initial=ability_share.round_vector(fit.current(), side), config=config, max_weight=1.0)
        average = secure.run_secure(grid, context, job)
        if average is None:
            report["stopped"] = "a round was not aggregated"
            break
        survivors = job.secure_log.survivors[-1]
        try:
            total = ability_share.unpack(np.asarray(average, dtype=np.float64) * survivors, d)
            if total.labels == 0:
                report["stopped"] = "no gateway has a label of the local model's outcomes"
                break
            fit.update(total)
        except ValueError as exc:
            report["stopped"] = f"the fleet's sum is not usable: {exc}"
            break
        report.update(rounds=report["rounds"] + 1, gateways=survivors, labels=total.labels, converged=fit.converged)
        if fit.converged:
            break
    if not fit.steps and "stopped" not in report:
        report["stopped"] = "no step beyond the prior was accepted (a round judges the last step: run at least 2)"
    return (fit.best() if fit.steps else None), report


def secure_quantiles(grid: Grid, context: Context, gateways: int, weights: np.ndarray) -> list[float] | None:
    """Quantiles of the fleet's scores under ``weights``, from the sum of the gateways' score histograms (SecAgg+):
    a quantile is not a sum, a histogram is; each gateway's is weighted by its (capped) label count."""
    job = secure.SecureRound(gateways=gateways, rounds=1, initial=weights.astype(np.float32), config={secure.TASK: "score-histogram"},
                             max_weight=1.0)
    average = secure.run_secure(grid, context, job)
    if average is None:
        return None
    histogram, used = secure.weighted_mean(average, job.secure_log.survivors[-1])
    return None if histogram is None else secure.histogram_quantiles(histogram)


def publish(folder: Path, router: RouterModel, meta: dict[str, Any], quantiles: list[float] | None, quantiles_source: str) -> dict[str, Any]:
    """``router`` (the base with the fleet's correction) written as a router folder in the classifier's safe format;
    calibrated by ``quantiles`` when the gateways sent some, else it keeps the base's calibration (and says so)."""
    router.meta = {**router.meta, **meta}
    if quantiles:
        router.meta["calibration"] = calibration(quantiles, quantiles_source)
    elif "calibration" in router.meta:
        router.meta["calibration"] = {**router.meta["calibration"], "source": "the base router's (no gateway sent score quantiles)"}
    return save_router(router, folder, name=str(meta.get("name", "federated")))


def correction_round(base: RouterModel, weights: np.ndarray, **fleet_meta: Any) -> RouterModel:
    """The base router with the correction the fleet learnt on its scores on top."""
    return base.corrected(Adapter.from_weights(weights), **fleet_meta)


def plan_from_run_config(cfg: Any, initial: np.ndarray) -> ServerPlan:
    """The plan a run config asks for (``fl server`` writes it); a key it lacks takes the federation's default."""
    d = DEFAULTS
    relative = float(cfg.get("relative-norm", d.relative_norm))
    return ServerPlan(
        strategy=str(cfg.get("strategy", d.strategy)),
        rounds=int(cfg.get("num-server-rounds", d.rounds)),
        local_epochs=int(cfg.get("local-epochs", d.local_epochs)),
        lr=float(cfg.get("lr", d.lr)),
        proximal_mu=float(cfg.get("proximal-mu", d.proximal_mu)),
        max_update_norm=float(cfg.get("max-update-norm", d.max_update_norm)),
        relative_norm=relative if relative > 0 else None,
        initial=initial,
        expected_clients=int(cfg.get("min-clients", d.min_clients)),
        dp_noise=float(cfg.get("dp-noise", d.dp_noise)),
        dp_clip=float(cfg.get("dp-clip", d.dp_clip)),
        secure=bool(cfg.get("secure-agg", d.secure_agg)),
    )


server_app = ServerApp()


@server_app.main()
def _server(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    base = load_router(Path(str(cfg["base-router"])))
    if base.version != str(cfg.get("base-version", "")):
        raise ValueError(f"the base router is version {base.version}, the run says {cfg.get('base-version')!r}")
    plan = plan_from_run_config(cfg, identity(base.dim))
    min_answers = int(cfg.get("node-weights-min-answers", DEFAULTS.node_weights_min_answers))
    outcome = run_plan(grid, plan, context)
    weights = outcome.final
    if plan.secure:
        fleet, pooled = secure_node_weights(grid, context, plan.expected_clients, min_answers)
    else:
        fleet, pooled = node_weights.pool(grid, NodeWeights(), min_answers=min_answers)
    log.warning("node weights: %s from %d of %d gateways", None if fleet is None else fleet.as_dict(), pooled["used"], pooled["asked"])
    ability: Ability | None = None
    rounds = int(cfg.get("ability-rounds", DEFAULTS.ability_rounds))
    if plan.secure and rounds > 0:
        ability, fitted = secure_ability(grid, context, plan.expected_clients, base, str(cfg.get("local-model", DEFAULTS.local_model)), rounds)
        log.warning("local ability: %s", fitted if ability is None else {**fitted, "offset": round(ability.offset, 4)})
    elif rounds > 0:
        log.warning("local ability: not shared (a gateway's gradient and Hessian of a few labels would show them: SecAgg+ only)")
    out = str(cfg.get("publish-dir", ""))
    if out:
        training = {"federated": True, "strategy": plan.strategy, "rounds": plan.rounds, "clients": plan.expected_clients,
                    "rejected_updates": len(outcome.rejected), "base": {"name": base.name, "version": base.version}}
        if outcome.epsilon is not None:
            training["differential_privacy"] = {"epsilon": round(outcome.epsilon, 3), "delta": plan.dp_delta, "noise_multiplier": plan.dp_noise,
                                                "clip": plan.dp_clip, "level": "user (one gateway, one vote)",
                                                "clipping": "on each gateway (fixedclipping_mod)" if plan.secure else "on the server",
                                                "accountant": "Flower's RDP accountant"}
        training["secure_aggregation"] = (
            {"protocol": "SecAgg+ (Flower)", "min_cohort": secure.MIN_SECURE_COHORT, "survivors": outcome.secure_log.survivors,
             "clipping_range": plan.secure_clipping_range} if plan.secure else False
        )
        router = correction_round(base, weights, rounds=plan.rounds, clients=plan.expected_clients)
        meta: dict[str, Any] = {"name": str(cfg.get("router-name", DEFAULTS.router_name)), "training": {**base.meta.get("training", {}), **training}}
        if fleet is not None:
            meta["node_weights"] = {**fleet.as_dict(), "gateways": pooled["used"], "answers": pooled["answers"]}
        if ability is not None:
            meta["local_ability"] = {"name": ability.name, "offset": round(ability.offset, 6), "loadings": [round(float(v), 6) for v in ability.loadings],
                                     "labels": ability.labels, "gateways": fitted["gateways"], "rounds": fitted["rounds"],
                                     "fit": "MAP around the prior, Newton steps on SecAgg+ sums (federated/ability_share.py)"}
        if plan.secure:
            quantiles, source = secure_quantiles(grid, context, plan.expected_clients, weights), (
                "the gateways' score histograms under this model, summed by secure aggregation (SecAgg+), label-count weighted"
            )
        else:
            quantiles, source = _pooled_quantiles(grid, weights), "gateways' score quantiles under this model, averaged by label count"
        header = publish(Path(out), router, meta, quantiles, source)
        log.warning("published router %s version %s to %s (on top of %s)", header["name"], header["version"], out, base.version)
