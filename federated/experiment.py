"""``fl simulate``'s benchmark as a function: the fleet's correction of the shipped router, central, federated
(FedAvg, FedProx, DP, secure aggregation), each gateway alone, under two attacks, personalized, and on subjects
the router never saw (fleet adaptation), one row each.

The CLI parses the options, calls :func:`simulate_benchmark`, prints the table and writes the JSON and the plot;
anything else (a notebook, a bench script) gets the same rows from the same call.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from hybridgate.classifiers.data import RoutingData
from hybridgate.classifiers.metrics import routing_curve
from hybridgate.federated.apps import ServerPlan
from hybridgate.federated.defaults import DEFAULTS, BenchmarkSettings
from hybridgate.federated.fleet_adaptation import Shipped, identity, shipped_in_distribution, subdivide
from hybridgate.federated.partition import Partition, assign
from hybridgate.federated.simulation import (
    Evaluator,
    Flipped,
    central_and_local,
    personalize,
    poisoned_gateways,
    run_federation,
)

Report = Callable[[str], None]  # a progress line (rich markup), as the CLI prints it
WHAT_FEDERATES = "a correction on top of the shipped router (blend): z = a * logit(router score) + b + v . vector"


@dataclass
class Run:
    """One federation of the table: its row name, strategy, and what differs from the plain run."""

    name: str
    strategy: str
    attack: Flipped | None = None
    relative_norm: float | None = None
    noise: float = 0.0
    split: int = 1
    rounds: int | None = None
    local_epochs: int | None = None
    secure: bool = False


@dataclass
class BenchmarkResult:
    """The table's rows by name, each federated row's APGR after each round, and what the plain FedAvg row learnt."""

    settings: BenchmarkSettings
    n_train: int
    n_test: int
    embedder: str
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    curves: dict[str, list[float]] = field(default_factory=dict)
    correction: np.ndarray | None = None
    shipped: Shipped | None = None
    correction_inputs: np.ndarray | None = None  # the training rows the correction reads (for its calibration)

    def summary(self) -> dict[str, Any]:
        """simulate.json."""
        s = self.settings
        return {"partition": s.partition, "gateways": s.gateways, "rounds": s.rounds, "local_epochs": s.local_epochs,
                "embedder": self.embedder, "what_federates": WHAT_FEDERATES, **self.rows}


def runs(s: BenchmarkSettings) -> list[Run]:
    """The table's federations, in its order."""
    filt = s.relative_norm if s.relative_norm > 0 else None
    out = [Run("federated", "fedavg"), Run("federated_fedprox", "fedprox")]
    dp = {"noise": s.dp_noise, "split": s.dp_split, "rounds": s.dp_rounds, "local_epochs": s.dp_local_epochs}
    if s.dp_noise > 0:
        out.append(Run("federated_dp", "fedavg", **dp))  # type: ignore[arg-type]
    if s.secure_rows:
        out.append(Run("federated_secagg", "fedavg", secure=True))
        if s.dp_noise > 0:
            out.append(Run("federated_secagg_dp", "fedavg", secure=True, **dp))  # type: ignore[arg-type]
    if s.attack_share > 0:
        bad = poisoned_gateways(s.gateways, s.attack_share)
        flipped, under = Flipped(bad), Flipped(bad, scale=2.9)  # under: just below a 3 x-median filter
        out += [
            Run("attack_fedavg", "fedavg", attack=flipped), Run("attack_robust", "trimmed-mean", attack=flipped, relative_norm=filt),
            Run("attack2_fedavg", "fedavg", attack=under), Run("attack2_robust", "trimmed-mean", attack=under, relative_norm=filt),
        ]
        if s.secure_rows:  # the poisoned gateways also skip their clipping mod: only the protocol's quantisation range binds them
            out.append(Run("attack_secagg", "fedavg", attack=flipped, secure=True))
            if s.dp_noise > 0:
                bad_split = poisoned_gateways(s.gateways * s.dp_split, s.attack_share)
                out.append(Run("attack_secagg_dp", "fedavg", attack=Flipped(bad_split), secure=True, **dp))  # type: ignore[arg-type]
    return out


def simulate_benchmark(
    rows: RoutingData, embedder: Any, cache: Path | None, s: BenchmarkSettings, report: Report, *, publish_to: Path | None = None
) -> BenchmarkResult:
    """Every row of the table on ``rows`` (their train split federated over ``s.gateways``, their test split
    scored), with ``embedder``'s vectors (cached under ``cache``); with ``publish_to``, the plain FedAvg row's
    router written there (:func:`publish_correction`). Raises ValueError for settings or data that cannot run."""
    from hybridgate.classifiers.embedding_cache import embed_cached

    s.check()
    train, test = rows.subset("train"), rows.subset("test")
    if len(train) < s.gateways or len(test) == 0:
        raise ValueError(f"{len(train)} training rows cannot be spread over {s.gateways} gateways")
    x_tr = embed_cached(embedder, list(train.prompts), cache, "training prompts")
    x_te = embed_cached(embedder, list(test.prompts), cache, "test prompts")
    report("fitting the router that ships (the default head) on the training split, and its scores of new queries")
    shipped = shipped_in_distribution(train, x_tr, test, x_te, embedder.name)
    x_in, x_in_te = shipped.inputs(x_tr, x_te)
    start = identity(x_tr.shape[1])
    evaluator = Evaluator(x_in_te, test)
    partition = cast(Partition, s.partition)  # checked above
    parts = assign(train.prompts, train.groups, s.gateways, partition)
    labels = train.label
    out = BenchmarkResult(s, len(train), len(test), embedder.name, shipped=shipped, correction_inputs=x_in)
    results = out.rows

    curve = routing_curve(shipped.test_scores, test.weak, test.strong, test.sha256).summary()
    results["shipped"] = {"apgr": round(float(curve["apgr"] or 0.0), 4), "cpt50": curve["cpt50"] or 1.0, "cpt80": curve["cpt80"] or 1.0,
                          "rounds": 0, "bytes_per_gateway_round": 0}
    central, local = central_and_local(x_in, labels, parts, s.gateways, evaluator, epochs=s.rounds * s.local_epochs, lr=s.lr, start=start)
    results["central"] = {**central, "rounds": 0, "bytes_per_gateway_round": 0}
    local_apgr = [r["apgr"] for r in local]
    results["local_only"] = {
        "apgr": round(float(np.mean(local_apgr)), 4),
        "apgr_worst": round(float(np.min(local_apgr)), 4),
        "cpt50": round(float(np.mean([r["cpt50"] for r in local])), 4),
        "cpt80": round(float(np.mean([r["cpt80"] for r in local])), 4),
        "gateways_scored": len(local),
        "rounds": 0,
        "bytes_per_gateway_round": 0,
    }
    for run in runs(s):
        k = s.gateways * run.split
        run_parts = subdivide(parts, run.split, train.sha256)
        n_rounds, n_epochs = run.rounds or s.rounds, run.local_epochs or s.local_epochs
        report(f"[bold]{run.name}[/]: {run.strategy}, {k} gateways, {n_rounds} rounds")
        plan = ServerPlan(
            strategy=run.strategy, rounds=n_rounds, local_epochs=n_epochs, lr=s.lr,
            max_update_norm=1e9 if run.attack or run.noise else DEFAULTS.max_update_norm, relative_norm=run.relative_norm,
            dp_noise=run.noise, dp_clip=s.dp_clip, initial=start, secure=run.secure,
        )
        res = run_federation(x_in, labels, run_parts, k, evaluator, plan, attack=run.attack)
        done = res.outcome
        last = done.history[-1] if done.history else {"apgr": float("nan"), "cpt50": 1.0, "cpt80": 1.0}
        results[run.name] = {
            "strategy": run.strategy + (f" + {run.relative_norm} x median filter" if run.relative_norm else ""),
            "apgr": last["apgr"],
            "cpt50": last["cpt50"],
            "cpt80": last["cpt80"],
            "rounds": n_rounds,
            "gateways": k,
            "bytes_per_gateway_round": res.bytes_per_gateway_round,
            "measured_bytes_per_gateway_round": round(res.measured_bytes_per_gateway_round),
            "seconds_per_round": round(done.seconds_per_round or float("nan"), 3),
            "wall_s": round(res.wall_s, 1),
            "rejected_updates": len(done.rejected),
            "secure_aggregation": run.secure,
            **({"dropouts_survived": sum(done.secure_log.sampled) - sum(done.secure_log.survivors),
                "rounds_aggregated": len(done.secure_log.survivors)} if run.secure else {}),
            **({"poisoned_gateways": sorted(run.attack.poisoned), "attack_scale": run.attack.scale} if run.attack else {}),
            **({"epsilon": round(done.epsilon or float("nan"), 2), "delta": plan.dp_delta, "noise_multiplier": run.noise,
                "clip": s.dp_clip, "local_epochs": n_epochs} if run.noise else {}),
        }
        out.curves[run.name] = [h["apgr"] for h in done.history if h["round"] > 0]
        if run.name == "federated":
            out.correction = done.final

    if out.correction is not None:
        p = personalize(out.correction, x_in, labels, parts, train, test, x_in_te, s.gateways, partition,
                        epochs=s.personal_epochs, lr=s.lr)
        results["personalized"] = {
            "apgr": p["apgr_personalized_own"], "apgr_global_same_questions": p["apgr_global_own"],
            "cpt50": float("nan"), "cpt80": float("nan"), "rounds": s.rounds, "bytes_per_gateway_round": 0, **p,
        }
        if publish_to is not None:
            header = publish_correction(publish_to, out)
            report(f"published router {header['name']} version {header['version']} to {publish_to}")
    if s.fleet_labels > 0:
        fleet = fleet_rows(rows, embedder, cache, s, report)
        if fleet is not None:
            results.update(fleet)
    return out


def fleet_rows(rows: RoutingData, embedder: Any, cache: Path | None, s: BenchmarkSettings, report: Report) -> dict[str, Any] | None:
    """The transfer protocol's folds as fleets: the shipped router (the default head) fitted without a fold's
    subjects, gateways of about ``s.fleet_labels`` labels each from those subjects, and the fold's test questions
    to score; the shipped router unchanged, each gateway's adapter alone, and the fleet's federated adapter.
    None where the data has too few groups for the folds."""
    from hybridgate.classifiers.embedding_cache import embed_cached
    from hybridgate.classifiers.protocols import Bench
    from hybridgate.federated.fleet_adaptation import fleet_adaptation, transfer_fleets

    per_gateway = s.fleet_labels
    if not Bench(rows).has_folds:
        report("fleet adaptation skipped: the data has fewer than five groups to make the transfer folds")
        return None
    x = embed_cached(embedder, list(rows.prompts), cache, "all prompts")
    folds = []
    for k, setting in transfer_fleets(rows, x, embedder.name, per_gateway):
        report(f"[bold]fleet adaptation[/], fold {k}: {setting.k} gateways of about {per_gateway} labels of unseen subjects")
        folds.append({"fold": k, **fleet_adaptation(setting, ServerPlan(rounds=s.rounds, local_epochs=s.local_epochs, lr=s.lr))})
    mean = {key: round(float(np.mean([f[key] for f in folds])), 4) for key in ("shipped", "alone", "alone_worst", "federated", "central")}
    common = {"cpt50": float("nan"), "cpt80": float("nan"), "rounds": s.rounds, "labels_per_gateway": per_gateway, "folds": folds}
    return {
        "fleet_shipped": {"apgr": mean["shipped"], **common, "rounds": 0, "bytes_per_gateway_round": 0},
        "fleet_alone": {"apgr": mean["alone"], "apgr_worst": mean["alone_worst"], **common, "rounds": 0, "bytes_per_gateway_round": 0},
        "fleet_central": {"apgr": mean["central"], **common, "rounds": 0, "bytes_per_gateway_round": 0},
        "fleet_federated": {
            "apgr": mean["federated"], **common, "bytes_per_gateway_round": folds[0]["bytes_per_gateway_round"],
            "wall_s": round(sum(f["wall_s"] for f in folds), 1),
        },
    }


def publish_correction(folder: Path, result: BenchmarkResult) -> dict[str, Any]:
    """The shipped router with the plain FedAvg row's correction on top, written the way ``fl server`` writes it.
    The calibration quantiles come from the pooled training rows, which only a simulation has; a deployed server
    pools the gateways' own."""
    from hybridgate.classifiers.artifact import save_router
    from hybridgate.classifiers.model import score_quantiles
    from hybridgate.federated.deploy import correction_round, publish
    from hybridgate.federated.task import scores

    if result.correction is None or result.shipped is None or result.correction_inputs is None:
        raise ValueError("no federated correction to publish")
    shipped, metrics, s = result.shipped.model, result.rows["federated"], result.settings
    meta = {
        "name": f"federated-{s.partition}-{s.gateways}",
        "training": {**shipped.meta.get("training", {}), "federated": True, "partition": s.partition, "gateways": s.gateways,
                     "rounds": metrics["rounds"], "strategy": metrics["strategy"]},
        "metrics": {"split": "test", "apgr": metrics["apgr"], "cpt50": metrics["cpt50"], "cpt80": metrics["cpt80"]},
    }
    with tempfile.TemporaryDirectory() as tmp:  # the base's version, which the correction records it was trained on
        save_router(shipped, Path(tmp), name="shipped")
    router = correction_round(shipped, result.correction, rounds=metrics["rounds"], clients=s.gateways)
    return publish(folder, router, meta, score_quantiles(scores(result.correction, result.correction_inputs)),
                   "pooled training rows (simulation)")
