"""How well does the personal-data detector do on real-looking text, and how long does it take?

Recall and precision per kind on the labelled corpus (tests/fixtures/pii_corpus.jsonl, made by
tests/fixtures/make_pii_corpus.py), for the detector as ``privacy.on_personal_data: redact`` builds it
(spelled-out addresses off: the rows that need them are left out) and as ``local`` builds it (spelled-out
addresses on: every row). Then the scan time of 4 KB of text: corpus rows run together (numbers, at-signs and
names everywhere) and plain prose, p50 and p99 over ``--runs`` scans.

Where the ``phonenumbers`` package is installed, its ``PhoneNumberMatcher`` (leniency VALID) is scored on the
same phone rows and timed on the same 4 KB in the same run (a twentieth of the scans: each takes ~0.1 s), the
comparison that decided against adding it.

``--before REF`` scores and times the detector as it was at a git commit in the same run (its
router/privacy.py, loaded on its own), so the table compares like with like.

    python bench/pii_detector.py [--runs 2000] [--before REF] [--out bench/results/pii_detector.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from hybridgate.router.privacy import Finding, PersonalDataDetector
from hybridgate.testing.pii_scoring import KINDS, NAMES, load_corpus, score

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "fixtures" / "pii_corpus.jsonl"  # data read from the checkout, not a module imported

TARGET_RECALL, TARGET_PRECISION, TARGET_MS = 0.98, 0.95, 2.0


def detector(spelled: bool, cls: Any = PersonalDataDetector) -> Any:
    try:
        return cls(NAMES, spelled=spelled)
    except TypeError:  # a detector from before the option (``--before``): the default one
        return cls(NAMES)


def detector_at(ref: str) -> Any:
    """The ``PersonalDataDetector`` class of router/privacy.py at git commit ``ref``."""
    source = subprocess.run(["git", "show", f"{ref}:router/privacy.py"], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as fh:
        fh.write(source)
    spec = importlib.util.spec_from_file_location("privacy_before", fh.name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["privacy_before"] = module
    spec.loader.exec_module(module)
    return module.PersonalDataDetector


def text_4k(rows: list[dict[str, Any]], rng: random.Random) -> str:
    out = ""
    while len(out) < 4096:
        out += rng.choice(rows)["text"] + " "
    return out[:4096]


def prose_4k(rng: random.Random) -> str:
    words = "the a gateway answers each query from the best place for it and keeps personal data on the device".split()
    out = ""
    while len(out) < 4096:
        out += rng.choice(words) + (". " if rng.random() < 0.08 else " ")
    return out[:4096]


def timings(find: Callable[[str], Any], texts: list[str], runs: int) -> dict[str, float]:
    """Wall time and the thread's CPU time of each scan: on a machine shared with other work the wall time
    also counts the waits for a core, the CPU time only the scan."""
    for t in texts[:20]:
        find(t)
    wall, cpu = [], []
    for i in range(runs):
        t = texts[i % len(texts)]
        w0, c0 = time.perf_counter(), time.thread_time()
        find(t)
        cpu.append((time.thread_time() - c0) * 1e3)
        wall.append((time.perf_counter() - w0) * 1e3)
    wall.sort()
    cpu.sort()
    p99 = int(0.99 * (runs - 1))
    return {"p50_ms": statistics.median(wall), "p99_ms": wall[p99], "max_ms": wall[-1],
            "cpu_p50_ms": statistics.median(cpu), "cpu_p99_ms": cpu[p99]}


def phonenumbers_find() -> Callable[[str], list[Finding]] | None:
    try:
        import phonenumbers
    except ImportError:
        return None

    def find(text: str) -> list[Finding]:
        out = []
        for region in ("US", "GB", "FR", "DE"):  # the corpus's national numbers come from these four
            for m in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID):
                out.append(Finding("phone", m.start, m.end, m.raw_string))
        return out

    return find


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--before", help="also score and time the detector at this git commit")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "pii_detector.json")
    args = ap.parse_args()
    rows = load_corpus(CORPUS)
    rng = random.Random(4096)
    mixed = [text_4k(rows, rng) for _ in range(50)]
    prose = [prose_4k(rng) for _ in range(50)]
    console = Console(width=130)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    result: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine(), "runs": args.runs,
                              "cpus": os.cpu_count(), "load_average_1min": load,
                              "corpus_rows": len(rows), "positives": sum(len(r["spans"]) for r in rows),
                              "hard_negatives": sum(1 for r in rows if not r["spans"]), "configs": {}}
    table = Table(title=f"PII detector on {len(rows)} corpus rows (targets: recall >= {TARGET_RECALL}, precision >= {TARGET_PRECISION})")
    for col in ("config", "kind", "positives", "found", "missed", "false alarms", "recall", "precision"):
        table.add_column(col, justify="left" if col in ("config", "kind") else "right")
    configs: list[tuple[str, bool, Any]] = [("redact (default)", False, PersonalDataDetector), ("local (spelled-out on)", True, PersonalDataDetector)]
    if args.before:
        before = detector_at(args.before)
        configs += [(f"{args.before} redact", False, before), (f"{args.before} local", True, before)]
    for config, spelled, cls in configs:
        det = detector(spelled, cls)
        subset = rows if spelled else [r for r in rows if not r["option"]]
        scores = score(det.find, subset)
        result["configs"][config] = {k: {"tp": s.tp, "fn": s.fn, "fp": s.fp, "recall": s.recall, "precision": s.precision,
                                          "misses": s.misses[:20], "false_alarms": s.false_alarms[:20]} for k, s in scores.items()}
        for k in KINDS:
            s = scores[k]
            table.add_row(config, k, str(s.tp + s.fn), str(s.tp), str(s.fn), str(s.fp),
                          f"{s.recall:.3f}" + ("" if s.recall >= TARGET_RECALL else " ✗"),
                          f"{s.precision:.3f}" + ("" if s.precision >= TARGET_PRECISION else " ✗"))
    alt = phonenumbers_find()
    if alt is not None:
        s = score(alt, [r for r in rows if not r["option"]])["phone"]
        result["phonenumbers"] = {"tp": s.tp, "fn": s.fn, "fp": s.fp, "recall": s.recall, "precision": s.precision,
                                  "misses": s.misses[:20], "false_alarms": s.false_alarms[:20]}
        table.add_row("phonenumbers VALID", "phone", str(s.tp + s.fn), str(s.tp), str(s.fn), str(s.fp), f"{s.recall:.3f}", f"{s.precision:.3f}")
    console.print(table)
    times = Table(title=f"scan time of 4 KB, {args.runs} scans each (target p99 <= {TARGET_MS} ms)")
    for col in ("detector", "text", "p50 ms", "p99 ms", "max ms", "CPU p50 ms", "CPU p99 ms"):
        times.add_column(col, justify="left" if col in ("detector", "text") else "right")
    result["scan_4k"] = {}
    cands: list[tuple[str, Callable[[str], Any]]] = [(config, detector(spelled, cls).find) for config, spelled, cls in configs]
    if alt is not None:
        cands.append(("phonenumbers VALID (phones only)", alt))
    for name, find in cands:
        runs = args.runs if not name.startswith("phonenumbers") else max(100, args.runs // 20)  # ~100 ms a scan
        for label, texts in (("corpus rows", mixed), ("prose", prose)):
            t = timings(find, texts, runs)
            result["scan_4k"][f"{name} / {label}"] = t
            times.add_row(name, label, *(f"{t[k]:.3f}" for k in ("p50_ms", "p99_ms", "max_ms", "cpu_p50_ms", "cpu_p99_ms")))
    console.print(times)
    console.print(f"load average {load}, {os.cpu_count()} CPUs (wall times include waits for a core; CPU times do not)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
