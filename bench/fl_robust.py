"""Poisoned gateways on both partitions: which aggregation stays near the clean run, under two attacks?

20 simulated gateways (MMLU's train split, by subject and iid), 30 rounds, 20 % of
them poisoned, each attack and each aggregation in its own federation:

- attacks: ``flipped`` (the update reversed and scaled 5 x, simulation.Flipped) and
  ``under the bound`` (reversed at 2.9 x the gateway's own honest step, just under a
  3 x-median norm filter, the same simulation.Flipped at 2.9);
- aggregations: FedAvg, the trimmed mean (20 % each side), and the trimmed mean
  behind a norm filter relative to each round's median update (3 x).

Prints APGR and the gap to the clean FedAvg run; writes ``bench/results/fl_robust.json``.

    python bench/fl_robust.py [--gateways 20] [--rounds 30]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from rich.console import Console
from rich.table import Table

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from hybridgate.federated.apps import ServerPlan  # noqa: E402
from mmlu import add_data_options, load, static_vectors  # noqa: E402 - bench/ is on the path when run as a script
from hybridgate.federated.partition import assign  # noqa: E402
from hybridgate.federated.simulation import Evaluator, Flipped, poisoned_gateways, run_federation  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_options(ap)
    ap.add_argument("--gateways", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--share", type=float, default=0.2)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fl_robust.json")
    args = ap.parse_args()
    logging.getLogger("flwr").setLevel(logging.ERROR)
    rows = load(args)
    train, test = rows.subset("train"), rows.subset("test")
    x_tr, x_te = static_vectors(train.prompts, "training prompts"), static_vectors(test.prompts, "test prompts")
    ev = Evaluator(x_te, test)
    bad = poisoned_gateways(args.gateways, args.share)
    attacks = {"flipped x5": Flipped(bad, 5.0), "under the bound (2.9 x own step)": Flipped(bad, 2.9)}
    aggregations = {
        "fedavg": {"strategy": "fedavg"},
        "trimmed mean": {"strategy": "trimmed-mean"},
        "trimmed mean + median norm filter": {"strategy": "trimmed-mean", "relative_norm": 3.0},
    }
    results = []
    for partition in ("by-subject", "iid"):
        parts = assign(train.prompts, train.groups, args.gateways, partition)

        def run(attack: object, **plan: object) -> float:
            res = run_federation(x_tr, train.label, parts, args.gateways, ev, ServerPlan(rounds=args.rounds, local_epochs=5, max_update_norm=1e9, **plan), attack=attack)  # type: ignore[arg-type]
            return float(res.plan.history[-1]["apgr"])

        clean = run(None)
        for aname, agg in aggregations.items():
            clean_agg = clean if aname == "fedavg" else run(None, **agg)
            for attack_name, attack in attacks.items():
                apgr = run(attack, **agg)
                results.append({"partition": partition, "aggregation": aname, "attack": attack_name, "apgr": round(apgr, 4),
                                "clean_fedavg": round(clean, 4), "clean_same_aggregation": round(clean_agg, 4), "gap": round(clean - apgr, 4)})
                print(results[-1], flush=True)
    table = Table(title=f"{args.gateways} gateways, {int(round(args.share * 100))} % poisoned, {args.rounds} rounds: APGR (gap to clean FedAvg)")
    for col in ("partition", "aggregation", "clean", *attacks):
        table.add_column(col)
    for partition in ("by-subject", "iid"):
        for aname in aggregations:
            rs = [r for r in results if r["partition"] == partition and r["aggregation"] == aname]
            table.add_row(partition, aname, f"{rs[0]['clean_same_aggregation']:.3f}", *(f"{r['apgr']:.3f} ({r['gap']:+.3f})" for r in rs))
    Console(width=160).print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()}, "poisoned": sorted(bad), "results": results}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
