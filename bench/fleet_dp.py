"""Does the fleet's correction keep its gain under differential privacy? The transfer folds as fleets, with DP.

For each of the routing benchmark's 5 transfer folds: the default router fitted
without the fold's subjects, the fold's labelled questions dealt to gateways of
``--labels`` labels each, and the correction federated with Flower's server-side
fixed clipping, Gaussian noise and RDP accountant (user level: one gateway, one
vote), beside the same without DP and the correction fitted centrally on all the
fold's labels. Prints a table and writes ``bench/results/fleet_dp.json``.

    python bench/fleet_dp.py [--noise 1.5] [--clip 0.5] [--rounds 5] [--labels 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from hybridgate.classifiers.adapt import fit_adapter  # noqa: E402
from hybridgate.classifiers.metrics import routing_curve  # noqa: E402
from hybridgate.federated.apps import ServerPlan  # noqa: E402
from mmlu import EMBEDDER, add_data_options, load, static_vectors  # noqa: E402 - bench/ is on the path when run as a script
from hybridgate.federated.fleet_adaptation import fleet_adaptation, transfer_fleets  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_options(ap)
    ap.add_argument("--noise", type=float, default=1.5)
    ap.add_argument("--clip", type=float, default=0.5)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--local-epochs", type=int, default=5)
    ap.add_argument("--labels", type=int, default=3, help="labels per gateway (more gateways, less noise each)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fleet_dp.json")
    args = ap.parse_args()
    logging.getLogger("flwr").setLevel(logging.ERROR)
    rows = load(args)
    x = static_vectors(rows.prompts, "all prompts")
    folds = []
    epsilon = None
    for k, setting in transfer_fleets(rows, x, EMBEDDER, args.labels):
        central = fit_adapter(setting.score_train, setting.x_train, setting.labels).apply(setting.score_test, setting.x_test)
        test = setting.test
        plain = fleet_adaptation(setting, ServerPlan(rounds=args.rounds, local_epochs=args.local_epochs))
        dp_plan = ServerPlan(rounds=args.rounds, local_epochs=args.local_epochs, dp_noise=args.noise, dp_clip=args.clip)
        dp = fleet_adaptation(setting, dp_plan)
        epsilon = dp_plan.epsilon
        folds.append({
            "fold": k, "gateways": setting.k, "shipped": plain["shipped"],
            "central": round(float(routing_curve(central, test.weak, test.strong, test.sha256).apgr), 4),
            "federated": plain["federated"], "federated_dp": dp["federated"],
        })
    mean = {key: round(float(np.mean([f[key] for f in folds])), 4) for key in ("shipped", "central", "federated", "federated_dp")}
    table = Table(title=f"fleet correction under DP: noise {args.noise}, clip {args.clip}, {args.rounds} rounds, {args.labels} labels a gateway, ε = {epsilon:.2f} (δ = 1e-5)")
    for col in ("fold", "gateways", "shipped", "central (all labels pooled)", "federated", "federated + DP"):
        table.add_column(col)
    for f in [*folds, {"fold": "mean", "gateways": "", **mean}]:
        table.add_row(str(f["fold"]), str(f["gateways"]), f"{f['shipped']:.3f}", f"{f['central']:.3f}", f"{f['federated']:.3f}", f"{f['federated_dp']:.3f}")
    Console(width=150).print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()}, "epsilon": epsilon, "delta": 1e-5, "mean": mean, "folds": folds}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
