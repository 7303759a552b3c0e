"""A new local model's ability from each gateway's own few labels, against the fleet's labels pooled (issue 22, point 3).

The new-model protocol of ``docs/across-sources.md`` (``shared/docs/routing-benchmark.md``, *Across sources*): the
outcome model is fitted on every source's train split with the pair's weak model held out everywhere, so it is
unknown and starts from the prior ability; the cloud model is the catalogue's. Then, as a gateway does
(``serving/router_adapt.py``), only the local model's ability is fitted from labels of its outcomes, and the pair is
scored on the source's test rows (APGR). The labels are the source's first ``gateways x labels`` train rows by
sha256, dealt ``labels`` to a gateway; each gateway keeps a random quarter home (held out, as the gateway does) and
the fleet fits its ability from the rest through the same wire format and Newton rounds as ``fl server``
(``federated/ability_share.py``: packed sums added as SecAgg+ adds them; the protocol's own masking and quantisation
are exercised by ``tests/test_fleet_ability.py``). Rows: the prior (N = 0); each gateway's own ability from its
``labels`` (mean and worst); the fleet's; every one of those labels pooled in one place; all the source's train
labels. ``adopt`` counts the gateways whose held-out labels say the fleet's ability beats the prior and their own
(the gateway's guard; it needs ``MIN_JUDGE`` held-out labels to judge at all).

    python bench/fleet_ability.py [--data ../shared/data] [--source llmrouter] [--gateways 20] [--labels 10 40] [--rounds 8]

Prints the table and writes ``bench/results/fleet_ability.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from hybridgate.classifiers.across_sources import first_train_rows, summary, test_rows, training_rows
from hybridgate.classifiers.across_train import ADAPT
from hybridgate.classifiers.embedder import load_embedder
from hybridgate.classifiers.local_labels import SD_UNKNOWN, log_loss
from hybridgate.classifiers.outcome_router import OutcomeLearner, prepare
from hybridgate.classifiers.outcomes import canonical
from hybridgate.classifiers.pair_score import Ability, ability_for, fit_ability, success
from hybridgate.classifiers.sources import NEW_MODEL_PAIRS
from hybridgate.federated.ability_share import FleetFit, QuerySide, gateway_vector, round_vector, unpack
from hybridgate.federated.defaults import DEFAULTS
from hybridgate.serving.router_adapt import MIN_JUDGE

SOURCES = ("routellm-mmlu", "mmlu-pro", "alpacaeval", "llmrouter")
RESULTS = Path(__file__).resolve().parent / "results"


def fleet_fit(prior: Ability, side: QuerySide, parts: list[tuple[np.ndarray, np.ndarray]], dim: int, rounds: int) -> Ability:
    """The fleet's ability as ``fl server`` fits it: each round, every gateway's packed sums at the fleet's point,
    added, and one line-searched Newton update."""
    d, inputs = len(prior.loadings), len(side.mean)
    fit = FleetFit(prior, *SD_UNKNOWN)
    for _ in range(rounds):
        total = sum(gateway_vector(round_vector(fit.current(), side), d, inputs, x, y).astype(np.float64) for x, y in parts)
        fit.update(unpack(np.asarray(total), d))
        if fit.converged:
            break
    best = fit.best()
    assert best is not None
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/hybridgate-cache"))
    ap.add_argument("--source", default="llmrouter", choices=sorted(NEW_MODEL_PAIRS))
    ap.add_argument("--gateways", type=int, default=20)
    ap.add_argument("--labels", type=int, nargs="+", default=[10, 40])
    ap.add_argument("--rounds", type=int, default=DEFAULTS.ability_rounds)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    started = time.perf_counter()
    sources, inputs, vectors = prepare([args.data / s for s in SOURCES], load_embedder("all-MiniLM-L6-v2-static"), args.cache)
    src = next(s for s in sources if s.name == args.source)
    weak, strong = pair = NEW_MODEL_PAIRS[args.source]
    fitted = OutcomeLearner(sources, inputs, vectors, {}, dict(ADAPT)).fit(
        training_rows(sources, src.name, leave_out=False), frozenset({canonical(weak)})
    )
    om = fitted.model
    x = inputs[src.name]
    u = om.latent(x)
    prior = ability_for(om, weak, cloud=False, source=src.name)
    cloud = ability_for(om, strong, cloud=True, source=src.name)
    assert prior.origin == "prior" and cloud.origin == "catalogue", (prior.origin, cloud.origin)
    side = QuerySide(om.x_mean.astype(np.float64), om.x_scale.astype(np.float64), om.w.astype(np.float64))
    idx = test_rows(src, pair)
    y_all = src.column(weak)

    def apgr(local: Ability) -> float:
        scores = success(u[idx], cloud) - success(u[idx], local)
        return float(summary(src, pair, idx, scores)["apgr"])

    def loss(local: Ability) -> float:
        """How well the ability predicts the local model's own graded outcomes on the test rows (log-loss)."""
        return log_loss(success(u[idx], local), y_all[idx])

    every = np.nonzero(src.train & ~np.isnan(y_all))[0]
    report: dict[str, Any] = {
        "source": src.name, "weak (unknown)": weak, "strong": strong, "gateways": args.gateways, "rounds": args.rounds,
        "n_test": int(len(idx)), "prior": round(apgr(prior), 4), "prior_loss": round(loss(prior), 4),
        "all_train_labels": {"labels": int(len(every)), "apgr": round(apgr(fit_ability(u[every], y_all[every], prior, *SD_UNKNOWN)), 4),
                             "loss": round(loss(fit_ability(u[every], y_all[every], prior, *SD_UNKNOWN)), 4)},
        "rows": [],
    }
    rng = np.random.default_rng(args.seed)
    for n in args.labels:
        rows = first_train_rows(src, args.gateways * n * 2)
        rows = rows[~np.isnan(y_all[rows])][: args.gateways * n]
        dealt = [rows[g * n:(g + 1) * n] for g in range(args.gateways)]
        held = [rng.random(len(r)) < 0.25 for r in dealt]
        mine = [fit_ability(u[r], y_all[r], prior, *SD_UNKNOWN) for r in dealt]
        own = [apgr(a) for a in mine]
        fleet = fleet_fit(prior, side, [(x[r[~h]], y_all[r[~h]]) for r, h in zip(dealt, held, strict=True)], len(vectors[src.name][0]), args.rounds)
        pooled = fit_ability(u[rows], y_all[rows], prior, *SD_UNKNOWN)
        adopt = judged = 0
        for r, h in zip(dealt, held, strict=True):
            if h.sum() < MIN_JUDGE:
                continue
            judged += 1
            hu, hy = u[r[h]], y_all[r[h]]
            best = log_loss(success(hu, prior), hy)
            if (~h).sum():
                best = min(best, log_loss(success(hu, fit_ability(u[r[~h]], y_all[r[~h]], prior, *SD_UNKNOWN)), hy))
            adopt += int(log_loss(success(hu, fleet), hy) < best)
        row = {"labels_each": n, "own_mean": round(float(np.mean(own)), 4), "own_worst": round(float(np.min(own)), 4),
               "own_loss_mean": round(float(np.mean([loss(a) for a in mine])), 4), "own_loss_worst": round(float(np.max([loss(a) for a in mine])), 4),
               "fleet": round(apgr(fleet), 4), "fleet_loss": round(loss(fleet), 4), "pooled_loss": round(loss(pooled), 4), "fleet_labels": fleet.labels, "pooled": round(apgr(pooled), 4), "pooled_labels": pooled.labels,
               "fleet_offset": round(fleet.offset, 3), "pooled_offset": round(pooled.offset, 3), "prior_offset": round(prior.offset, 3),
               "judged": judged, "adopt": adopt}
        report["rows"].append(row)
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["command"] = "python bench/fleet_ability.py " + " ".join(
        ["--source", args.source, "--gateways", str(args.gateways), "--labels", *map(str, args.labels), "--rounds", str(args.rounds)]
    )
    a = report["all_train_labels"]
    print(f"{src.name}: {weak} (unknown) -> {strong}, {len(idx)} test rows; APGR (test log-loss of the local outcomes): "
          f"prior {report['prior']:.3f} ({report['prior_loss']:.3f}); all {a['labels']} train labels {a['apgr']:.3f} ({a['loss']:.3f})")
    print("| labels each | own: APGR mean, worst (log-loss mean, worst) | fleet: APGR (log-loss), labels | pooled in one place | adopting / judged |")
    print("|---|---|---|---|---|")
    for r in report["rows"]:
        print(f"| {r['labels_each']} | {r['own_mean']:.3f}, {r['own_worst']:.3f} ({r['own_loss_mean']:.3f}, {r['own_loss_worst']:.3f}) | "
              f"{r['fleet']:.3f} ({r['fleet_loss']:.3f}), {r['fleet_labels']} | {r['pooled']:.3f} ({r['pooled_loss']:.3f}), {r['pooled_labels']} | "
              f"{r['adopt']} / {r['judged']} |")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / ("fleet_ability.json" if args.source == "llmrouter" else f"fleet_ability_{args.source}.json")
    out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out} ({report['seconds']} s)")


if __name__ == "__main__":
    main()
