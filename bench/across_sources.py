"""The across-sources table for the outcomes router's recipe and the outcomes + length stack, beside the baselines.

Leave one source out, new traffic from N = 0, 25, 50, 100, 200 labels, in source and new model
(``shared/docs/routing-benchmark.md``, *Across sources*), each source's test split, every pair; the same
functions as ``hybridgate router compare --across``. Both routers share each protocol's outcome-model fit (the
stack reads the same fitted model). Prints the tables and writes ``bench/results/across_sources.json``
(the outcomes recipe, as before) and ``bench/results/across_sources_stack.json``. Prompt vectors are cached under
``--cache`` (outside the repo).

    python bench/across_sources.py [--data ../shared/data] [--cache /tmp/hybridgate-cache]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hybridgate.classifiers.across_sources import run_all
from hybridgate.classifiers.across_train import ADAPT
from hybridgate.classifiers.embedder import load_embedder
from hybridgate.classifiers.outcome_router import (
    FittedOutcomes,
    OutcomeLearner,
    prepare,
)
from hybridgate.classifiers.outcomes import canonical
from hybridgate.classifiers.stack_score import StackLearner, StackSettings
from hybridgate.cli_across import _print
from hybridgate.cli_router import _rule_scores

SOURCES = ("routellm-mmlu", "mmlu-pro", "alpacaeval", "llmrouter")
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class SharedFits:
    """An outcomes learner that fits each set of training rows once, for several routers that read the fit."""

    learner: OutcomeLearner
    fits: dict[bytes, FittedOutcomes] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.learner.name

    def fit(self, rows: Mapping[str, np.ndarray], hidden: frozenset[str]) -> FittedOutcomes:
        key = b"|".join(k.encode() + np.packbits(v).tobytes() for k, v in sorted(rows.items())) + b"#" + ",".join(sorted(hidden)).encode()
        if key not in self.fits:
            self.fits[key] = self.learner.fit(rows, hidden)
        return self.fits[key]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/hybridgate-cache"))
    args = ap.parse_args()
    sources, inputs, vectors = prepare([args.data / s for s in SOURCES], load_embedder("all-MiniLM-L6-v2-static"), args.cache)
    shared = SharedFits(OutcomeLearner(sources, inputs, vectors, {}, dict(ADAPT), name="across-static recipe"))
    settings = StackSettings()
    stack = StackLearner(shared.learner, settings, name="outcomes + length stack")

    @dataclass
    class Stacked:
        name: str = stack.name

        def fit(self, rows: Mapping[str, np.ndarray], hidden: frozenset[str]) -> Any:
            return stack.wrap(shared.fit(rows, hidden))

    for learner, out in ((shared, "across_sources.json"), (Stacked(), "across_sources_stack.json")):
        report = run_all(sources, learner, _rule_scores, canonical=canonical).row()  # type: ignore[arg-type]
        report["settings"] = {"adapt": {k: list(v) if isinstance(v, tuple) else v for k, v in ADAPT.items()},
                              **({"stack": stack.describe()} if isinstance(learner, Stacked) else {})}
        report["command"] = "python bench/across_sources.py --data ../shared/data"
        _print(report)
        (RESULTS / out).write_text(json.dumps(report, indent=1, default=float) + "\n", encoding="utf-8")
        print(f"wrote {RESULTS / out}")


if __name__ == "__main__":
    main()
