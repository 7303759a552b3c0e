"""How far does one machine simulate a fleet? Many gateways, many rounds, with Flower's simulation runtime.

One FedAvg federation of ``--gateways`` simulated gateways (MMLU's train split
spread over them by subject) for ``--rounds`` rounds, training what a real fleet
trains (the correction on top of the shipped router, ``fl simulate``'s rows), with
Ray's start-up included in the wall time (fitting the router beforehand is not); memory is the peak resident set of this process and
every process it started (Ray's workers), sampled every 0.2 s. Prints a table
and writes ``bench/results/fl_scale.json``.

    python bench/fl_scale.py [--gateways 100] [--rounds 30] [--data ../shared/data/routellm-mmlu/responses] [--out F]
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path

import psutil
from rich.console import Console
from rich.table import Table

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from hybridgate.federated.apps import ServerPlan  # noqa: E402
from hybridgate.federated.fleet_adaptation import identity, shipped_in_distribution  # noqa: E402
from mmlu import EMBEDDER, add_data_options, load, static_vectors  # noqa: E402 - bench/ is on the path when run as a script
from hybridgate.federated.partition import assign  # noqa: E402
from hybridgate.federated.simulation import Evaluator, run_federation  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


class PeakMemory:
    """The largest total RSS of this process and its descendants seen while running."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(0.2)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_options(ap)
    ap.add_argument("--gateways", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--local-epochs", type=int, default=5)
    ap.add_argument("--partition", default="by-subject", choices=["by-subject", "iid"])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fl_scale.json")
    args = ap.parse_args()
    rows = load(args)
    train, test = rows.subset("train"), rows.subset("test")
    x_tr, x_te = static_vectors(train.prompts, "training prompts"), static_vectors(test.prompts, "test prompts")
    rows_tr, rows_te = shipped_in_distribution(train, x_tr, test, x_te, EMBEDDER).inputs(x_tr, x_te)
    parts = assign(train.prompts, train.groups, args.gateways, args.partition)
    plan = ServerPlan(rounds=args.rounds, local_epochs=args.local_epochs, initial=identity(x_tr.shape[1]))
    with PeakMemory() as mem:
        res = run_federation(rows_tr, train.label, parts, args.gateways, Evaluator(rows_te, test), plan)
    last = res.plan.history[-1]
    row = {
        "gateways": args.gateways, "rounds": args.rounds, "partition": args.partition, "local_epochs": args.local_epochs,
        "wall_s": round(res.wall_s, 1), "peak_rss_mib": round(mem.peak / 2**20), "apgr": last["apgr"],
        "bytes_per_gateway_round": res.bytes_per_gateway_round, "cores": os.cpu_count(),
    }
    table = Table(title="a simulated fleet, FedAvg, Ray's start-up included")
    for col in ("gateways", "rounds", "wall", "peak memory (all processes)", "APGR", "bytes / gateway / round"):
        table.add_column(col)
    table.add_row(str(args.gateways), str(args.rounds), f"{row['wall_s']:.0f} s", f"{row['peak_rss_mib']} MiB", f"{row['apgr']:.3f}", str(row["bytes_per_gateway_round"]))
    Console(width=140).print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(row, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
