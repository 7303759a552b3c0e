"""The across-sources table for the pair-blend head (``pair-blend-static``'s recipe), beside the baselines.

Leave one source out, new traffic from N = 0, 25, 50, 100, 200 labels, in source and new model
(``shared/docs/routing-benchmark.md``, *Across sources*; :mod:`hybridgate.classifiers.across_sources`), each
source's test split scored once, every pair, for two weightings fixed before this run: the default selection's
winner (gain 8, length 2, topic 2; chosen on inner splits of the train splits) and the best weighting on the
MMLU in-distribution gate (gain 1, length 2, topic 2; ``bench/results/default_choice.json``). Both share each
protocol's fit (weights only scale standardised terms). Labels reach the head as a gateway's do
(:mod:`hybridgate.classifiers.pair_blend_across`): new traffic through the held-out-validated Adapter, a new
model's ability through ``fit_ability``. New model at N = 0 is also scored with neither model known (the
catalogue-free part). Writes ``bench/results/across_sources_pair_blend.json``; ``--only-new-model`` runs that
protocol alone (its fits, the same as the full run's) and writes ``bench/results/across_sources_pair_blend_newmodel.json``.

    python bench/across_sources_pair_blend.py [--data ../shared/data] [--cache /tmp/hybridgate-cache] [--only-new-model]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from hybridgate.classifiers.across_sources import run_all, test_rows, training_rows
from hybridgate.classifiers.embedder import load_embedder
from hybridgate.classifiers.metrics import routing_curve
from hybridgate.classifiers.outcome_router import prepare
from hybridgate.classifiers.outcomes import canonical
from hybridgate.classifiers.pair_blend_across import PairBlendAcross, catalogue_free
from hybridgate.classifiers.pair_blend_head import PairBlendHead
from hybridgate.classifiers.pair_blend_train import PairBlendLearner
from hybridgate.classifiers.sources import NEW_MODEL_PAIRS
from hybridgate.cli_across import _print
from hybridgate.cli_router import _rule_scores

SOURCES = ("routellm-mmlu", "mmlu-pro", "alpacaeval", "llmrouter")
OUT = Path(__file__).resolve().parent / "results" / "across_sources_pair_blend.json"
OUT_NEW_MODEL = OUT.with_name("across_sources_pair_blend_newmodel.json")
WEIGHTINGS = {
    "pair-blend (gain 8, length 2, topic 2): selection winner": {"w_gain": 8.0, "w_length": 2.0, "w_topic": 2.0},
    "pair-blend (gain 1, length 2, topic 2): best MMLU in-distribution": {"w_gain": 1.0, "w_length": 2.0, "w_topic": 2.0},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/hybridgate-cache"))
    ap.add_argument("--only-new-model", action="store_true", help="the new-model protocol alone (a fraction of the run's time)")
    args = ap.parse_args()
    protocols = ("new_model",) if args.only_new_model else ("loso", "in_source", "new_model")
    out = OUT_NEW_MODEL if args.only_new_model else OUT
    sources, inputs, vectors = prepare([args.data / s for s in SOURCES], load_embedder("all-MiniLM-L6-v2-static"), args.cache)
    base = PairBlendLearner(sources, inputs, vectors)
    fits: dict[bytes, PairBlendHead] = {}
    reports: list[dict[str, Any]] = []
    for name, weights in WEIGHTINGS.items():
        learner = PairBlendAcross(base, weights, name=name, fits=fits)
        report = run_all(sources, learner, _rule_scores, canonical=canonical, protocols=protocols).row()
        # New model at N = 0 with neither model known (the same in-source fit with the model hidden).
        free: dict[str, float] = {}
        for src in sources:
            if src.name not in NEW_MODEL_PAIRS:
                continue
            pair = NEW_MODEL_PAIRS[src.name]
            fitted = learner.fit(training_rows(sources, src.name, leave_out=False), frozenset({canonical(pair[0])}))
            idx = test_rows(src, pair)
            curve = routing_curve(catalogue_free(fitted, src.name, idx), src.column(pair[0])[idx], src.column(pair[1])[idx],
                                  [src.sha256[i] for i in idx])
            free[src.name] = curve.summary()["apgr"]
        report["new_model_catalogue_free"] = free
        report["label_use"] = learner.log
        report["settings"] = {"weights": weights, "new traffic": "Adapter on the head's score (extra: query vector; label: "
                              "strong grade > weak grade), adopted when it beats the head's AUC on a held-out quarter",
                              "new model": "fit_ability (SD_UNKNOWN) on the weak model's labels, adopted when it beats the "
                              "prior's log-loss on a held-out quarter"}
        report["command"] = "python bench/across_sources_pair_blend.py --data ../shared/data" + (" --only-new-model" if args.only_new_model else "")
        _print(report)
        reports.append(report)
    out.write_text(json.dumps({"routers": reports}, indent=1, default=float) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
