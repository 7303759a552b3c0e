"""The across-sources table for the outcomes router's shipped recipe, beside random, prompt length and the rules.

Leave one source out, new traffic from N = 0, 25, 50, 100, 200 labels, in source and new model
(``shared/docs/routing-benchmark.md``, *Across sources*), each source's test split, every pair; the same
functions as ``hybridgate router compare --across``. Prints the table and writes
``bench/results/across_sources.json``. Prompt vectors are cached under ``--cache`` (outside the repo).

    python bench/across_sources.py [--data ../shared/data] [--cache /tmp/hybridgate-cache]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hybridgate.classifiers.across_sources import run_all
from hybridgate.classifiers.across_train import ADAPT
from hybridgate.classifiers.embedder import load_embedder
from hybridgate.classifiers.outcome_router import OutcomeLearner, prepare
from hybridgate.classifiers.outcomes import canonical
from hybridgate.cli_across import _print
from hybridgate.cli_router import _rule_scores

SOURCES = ("routellm-mmlu", "mmlu-pro", "alpacaeval", "llmrouter")
OUT = Path(__file__).resolve().parent / "results" / "across_sources.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/hybridgate-cache"))
    args = ap.parse_args()
    sources, inputs, vectors = prepare([args.data / s for s in SOURCES], load_embedder("all-MiniLM-L6-v2-static"), args.cache)
    learner = OutcomeLearner(sources, inputs, vectors, {}, dict(ADAPT), name="across-static recipe")
    report = run_all(sources, learner, _rule_scores, canonical=canonical).row()
    _print(report)
    OUT.write_text(json.dumps(report, indent=1, default=float) + "\n", encoding="utf-8")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
