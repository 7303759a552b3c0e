"""How far does one machine simulate a fleet, and what does secure aggregation cost? Many gateways, many rounds,
with Flower's simulation runtime, three ways: plain FedAvg, SecAgg+ (Flower's workflow and mods), and SecAgg+ with
client-side clipping and Gaussian noise on the masked sum (RDP accountant).

Each federation of ``--gateways`` simulated gateways (MMLU's train split spread
over them by subject) trains what a real fleet trains (the correction on top of
the shipped router, ``fl simulate``'s rows), with Ray's start-up included in the
wall time (fitting the router beforehand is not); memory is the peak resident
set of this process and every process it started (Ray's workers), sampled every
0.2 s. Bytes are every training message's serialised records, both ways, per
gateway per round (``federated/traffic.py``); seconds per round are between the
evaluations that close consecutive rounds. ``--vanish N``: in the secure rows N
gateways stop each round after their keys were shared (dropouts survived).
Prints a table and writes ``bench/results/fl_scale.json``.

    python bench/fl_scale.py [--gateways 100] [--rounds 30] [--modes fedavg secagg secagg-dp] [--vanish 0] [--out F]
"""

from __future__ import annotations

import argparse
import json
import os
import threading
from pathlib import Path

import psutil
from rich.console import Console
from rich.table import Table

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mmlu import EMBEDDER, add_data_options, load, static_vectors  # noqa: E402 - bench/ is on the path when run as a script

from hybridgate.federated.apps import ServerPlan  # noqa: E402
from hybridgate.federated.fleet_adaptation import identity, shipped_in_distribution  # noqa: E402
from hybridgate.federated.partition import assign  # noqa: E402
from hybridgate.federated.simulation import Evaluator, Vanish, poisoned_gateways, run_federation  # noqa: E402

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


MODES = ("fedavg", "secagg", "secagg-dp")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_options(ap)
    ap.add_argument("--gateways", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--local-epochs", type=int, default=5)
    ap.add_argument("--partition", default="by-subject", choices=["by-subject", "iid"])
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--dp-noise", type=float, default=2.2)
    ap.add_argument("--dp-clip", type=float, default=1.0)
    ap.add_argument("--dp-rounds", type=int, default=10, help="rounds of the DP row (fewer rounds, less privacy spent)")
    ap.add_argument("--dp-local-epochs", type=int, default=20)
    ap.add_argument("--vanish", type=int, default=0, help="gateways that stop mid-round, every round, in the secure rows")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fl_scale.json")
    args = ap.parse_args()
    rows = load(args)
    train, test = rows.subset("train"), rows.subset("test")
    x_tr, x_te = static_vectors(train.prompts, "training prompts"), static_vectors(test.prompts, "test prompts")
    rows_tr, rows_te = shipped_in_distribution(train, x_tr, test, x_te, EMBEDDER).inputs(x_tr, x_te)
    parts = assign(train.prompts, train.groups, args.gateways, args.partition)
    results = []
    for mode in args.modes:
        dp = mode == "secagg-dp"
        rounds, epochs = (args.dp_rounds, args.dp_local_epochs) if dp else (args.rounds, args.local_epochs)
        plan = ServerPlan(rounds=rounds, local_epochs=epochs, initial=identity(x_tr.shape[1]), secure=mode != "fedavg",
                          dp_noise=args.dp_noise if dp else 0.0, dp_clip=args.dp_clip)
        gone = Vanish(poisoned_gateways(args.gateways, args.vanish / args.gateways, seed=1)) if args.vanish and plan.secure else None
        with PeakMemory() as mem:
            res = run_federation(rows_tr, train.label, parts, args.gateways, Evaluator(rows_te, test), plan, dropout=gone)
        last = res.outcome.history[-1]
        log = res.outcome.secure_log
        results.append({
            "mode": mode, "gateways": args.gateways, "rounds": rounds, "partition": args.partition, "local_epochs": epochs,
            "wall_s": round(res.wall_s, 1), "peak_rss_mib": round(mem.peak / 2**20), "apgr": last["apgr"],
            "epsilon": None if res.outcome.epsilon is None else round(res.outcome.epsilon, 2),
            "bytes_per_gateway_round": round(res.measured_bytes_per_gateway_round),
            "payload_bytes_per_gateway_round": res.bytes_per_gateway_round,
            "seconds_per_round": round(res.outcome.seconds_per_round or float("nan"), 3),
            "dropouts_survived": sum(log.sampled) - sum(log.survivors) if plan.secure else None,
            "rounds_aggregated": len(log.survivors) if plan.secure else rounds, "cores": os.cpu_count(),
        })
    base = next((r for r in results if r["mode"] == "fedavg"), None)
    table = Table(title=f"a simulated fleet of {args.gateways} gateways ({args.partition}), Ray's start-up included in the wall time")
    for col in ("mode", "rounds", "APGR", "ε", "bytes / gateway / round", "s / round", "dropouts survived", "wall", "peak memory"):
        table.add_column(col)
    for r in results:
        ratio = (f" ({r['bytes_per_gateway_round'] / base['bytes_per_gateway_round']:.1f}x)", f" ({r['seconds_per_round'] / base['seconds_per_round']:.1f}x)") if base and r is not base else ("", "")
        table.add_row(
            r["mode"], str(r["rounds"]), f"{r['apgr']:.4f}", "—" if r["epsilon"] is None else f"{r['epsilon']:.2f}",
            f"{r['bytes_per_gateway_round']}{ratio[0]}", f"{r['seconds_per_round']:.2f}{ratio[1]}",
            "—" if r["dropouts_survived"] is None else str(r["dropouts_survived"]), f"{r['wall_s']:.0f} s", f"{r['peak_rss_mib']} MiB",
        )
    Console(width=160).print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results if len(results) > 1 else results[0], indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
