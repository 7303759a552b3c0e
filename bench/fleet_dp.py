"""Does the fleet's correction keep its gain under differential privacy? The transfer folds as fleets, with DP,
for several noise levels and clipping norms: privacy spent (ε) against APGR, a curve per clipping norm.

For each of the routing benchmark's 5 transfer folds: the default router fitted
without the fold's subjects, the fold's labelled questions dealt to gateways of
``--labels`` labels each, and the correction federated with Flower's server-side
fixed clipping, Gaussian noise and RDP accountant (user level: one gateway, one
vote) at each ``--clip`` norm and ``--noise`` multiplier, beside the same without DP and the
correction trained centrally on all the fold's labels (as many steps as the
federation). Prints a table and writes ``bench/results/fleet_dp.json`` and
``fleet_dp.png``.

With ``--secure`` the DP federations run under secure aggregation (Flower's
SecAgg+): each gateway clips its own update (Flower's ``fixedclipping_mod``) and
the server adds the noise to the unmasked sum (``federated/secure.py``); the
results go to ``fleet_dp_secure.json`` unless ``--out`` says otherwise.

    python bench/fleet_dp.py [--noise 1.5 2.2 4.0] [--clip 0.5 1.0 2.0] [--rounds 10] [--local-epochs 20] [--labels 3] [--secure]
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

from mmlu import EMBEDDER, add_data_options, load, static_vectors  # noqa: E402 - bench/ is on the path when run as a script

from hybridgate.federated.apps import ServerPlan  # noqa: E402
from hybridgate.federated.fleet_adaptation import federate, fleet_adaptation, transfer_fleets  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_options(ap)
    ap.add_argument("--noise", type=float, nargs="+", default=[1.5, 2.2, 4.0])
    ap.add_argument("--clip", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--local-epochs", type=int, default=20)
    ap.add_argument("--labels", type=int, default=3, help="labels per gateway (more gateways, less noise each)")
    ap.add_argument("--secure", action="store_true", help="the DP federations under SecAgg+, clipping on each gateway")
    ap.add_argument("--folds", type=int, nargs="+", default=None, help="only these transfer folds (default: all five)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.out is None:
        args.out = ROOT / "bench" / "results" / ("fleet_dp_secure.json" if args.secure else "fleet_dp.json")
    logging.getLogger("flwr").setLevel(logging.ERROR)
    rows = load(args)
    x = static_vectors(rows.prompts, "all prompts")
    folds = []
    epsilon: dict[float, float] = {}
    for k, setting in transfer_fleets(rows, x, EMBEDDER, args.labels):
        if args.folds is not None and k not in args.folds:
            continue
        plain = fleet_adaptation(setting, ServerPlan(rounds=args.rounds, local_epochs=args.local_epochs))
        fold = {"fold": k, "gateways": setting.k, **{key: plain[key] for key in ("shipped", "central", "federated")}, "dp": {}}
        for clip in args.clip:
            for noise in args.noise:
                plan = ServerPlan(rounds=args.rounds, local_epochs=args.local_epochs, dp_noise=noise, dp_clip=clip, secure=args.secure)
                apgr, res = federate(setting, plan)  # the DP run alone: no refit of the rest
                fold["dp"][f"{clip}/{noise}"] = round(apgr, 4)
                fold.setdefault("seconds_per_round", {})[f"{clip}/{noise}"] = round(res.outcome.seconds_per_round or float("nan"), 3)
                epsilon[noise] = float(res.outcome.epsilon or float("nan"))  # the accountant's ε depends on the noise and rounds only
        folds.append(fold)
    mean = {key: round(float(np.mean([f[key] for f in folds])), 4) for key in ("shipped", "central", "federated")}
    mean["gateways"] = round(float(np.mean([f["gateways"] for f in folds])), 1)
    curve = [
        {"clip": c, "noise": n, "epsilon": round(epsilon[n], 2), "apgr": round(float(np.mean([f["dp"][f"{c}/{n}"] for f in folds])), 4)}
        for c in args.clip for n in sorted(args.noise)
    ]
    how = "SecAgg+ with client-side clipping" if args.secure else "server-side clipping"
    title = (f"the fleet's correction under DP ({how}): {args.rounds} rounds of {args.local_epochs} local epochs, {args.labels} labels "
             f"a gateway (δ = 1e-5); mean of 5 transfer folds")
    table = Table(title=title)
    for col in ("clip", "noise multiplier", "ε", "federated + DP", "gap to central"):
        table.add_column(col, justify="right")
    for point in curve:
        table.add_row(f"{point['clip']}", f"{point['noise']}", f"{point['epsilon']:.1f}", f"{point['apgr']:.3f}", f"{point['apgr'] - mean['central']:+.3f}")
    console = Console(width=150)
    console.print(table)
    console.print(f"shipped {mean['shipped']:.3f}, central {mean['central']:.3f}, federated without DP {mean['federated']:.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: v if isinstance(v, (int, float, list)) else str(v) for k, v in vars(args).items()}
    args.out.write_text(json.dumps({"settings": settings, "delta": 1e-5, "mean": mean, "curve": curve, "folds": folds}, indent=2) + "\n")
    _plot(args.out.with_suffix(".png"), curve, mean, title)
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


def _plot(path: Path, curve: list[dict[str, float]], mean: dict[str, float], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for clip in sorted({c["clip"] for c in curve}):
        points = [c for c in curve if c["clip"] == clip]
        ax.plot([c["epsilon"] for c in points], [c["apgr"] for c in points], marker="o", label=f"federated + DP, clip {clip}")
        for c in points:
            ax.annotate(f"σ {c['noise']}", (c["epsilon"], c["apgr"]), textcoords="offset points", xytext=(4, -12), fontsize=7)
    ax.axhline(mean["central"], color="black", linestyle="--", label="central")
    ax.axhline(mean["federated"], color="tab:green", linestyle=":", label="federated, no DP")
    ax.axhline(mean["shipped"], color="grey", linestyle="-.", label="shipped router")
    ax.axvline(8.0, color="tab:red", alpha=0.3, label="ε = 8")
    ax.set_xlabel("ε (δ = 1e-5)")
    ax.set_ylabel("APGR on the fold's test questions")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
