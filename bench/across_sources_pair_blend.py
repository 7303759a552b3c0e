"""The across-sources table for the pair-blend head (``pair-blend-static``'s recipe) and the default's recipe
(``pair-blend-mmlu-static``), beside the baselines.

Leave one source out, new traffic from N = 0, 25, 50, 100, 200 labels, in source and new model
(``shared/docs/routing-benchmark.md``, *Across sources*; :mod:`hybridgate.classifiers.across_sources`), each
source's test split scored once, every pair, for three routers fixed before this run: the pair-blend head at the
previous selection's winner (gain 8, length 2, topic 2; chosen on inner splits of the train splits), at the best
weighting on the MMLU in-distribution gate (gain 1, length 2, topic 2; ``bench/results/default_choice.json``), and
the shipped default's recipe (:class:`~hybridgate.classifiers.pair_blend_across.MmluBlendAcross`: gain 8, length 2,
topic 2, times 0 on multiple choice, plus 0.25 x ``blend-static``'s recipe refitted on the training rows'
``routellm-mmlu`` rows; the pair-blend part alone where the protocol leaves no such row). All three share each
protocol's pair-blend fit (weights only scale standardised terms). Labels reach the head as a gateway's do
(:mod:`hybridgate.classifiers.pair_blend_across`): new traffic through the held-out-validated Adapter, a new
model's ability through ``fit_ability``. New model at N = 0 is also scored with neither model known (the
catalogue-free part). Writes ``bench/results/across_sources_pair_blend.json``; ``--only-new-model`` runs that
protocol alone (its fits, the same as the full run's) and writes ``bench/results/across_sources_pair_blend_newmodel.json``;
``--routers default`` (or ``g8``, ``g1``, comma-separated) runs only those routers and writes
``bench/results/across_sources_pair_blend_<names>.json`` (``..._newmodel_<names>.json`` with ``--only-new-model``).

    python bench/across_sources_pair_blend.py [--data ../shared/data] [--cache /tmp/hybridgate-cache] [--only-new-model]
        [--routers g8,g1,default]
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
from hybridgate.classifiers.pair_blend_across import MmluBlendAcross, PairBlendAcross, catalogue_free
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
DEFAULT_NAME = "pair-blend-mmlu-static recipe (the default): pair-blend (gain 8, length 2, topic 2) x 0 on multiple choice + 0.25 x MMLU blend"
DEFAULT_WEIGHTS = {"w_gain": 8.0, "w_length": 2.0, "w_topic": 2.0}
SHORT = {"g8": next(iter(WEIGHTINGS)), "g1": list(WEIGHTINGS)[1], "default": DEFAULT_NAME}
LABELS = ("Adapter on the head's score (extra: query vector; label: strong grade > weak grade), adopted when it beats "
          "the head's AUC on a held-out quarter")
NEW_MODEL = "fit_ability (SD_UNKNOWN) on the weak model's labels, adopted when it beats the prior's log-loss on a held-out quarter"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/hybridgate-cache"))
    ap.add_argument("--only-new-model", action="store_true", help="the new-model protocol alone (a fraction of the run's time)")
    ap.add_argument("--routers", default="g8,g1,default", help="which routers (g8, g1, default; comma-separated)")
    args = ap.parse_args()
    chosen = [r.strip() for r in args.routers.split(",") if r.strip()]
    if not chosen or set(chosen) - set(SHORT):
        raise SystemExit(f"--routers: choose among {', '.join(SHORT)}")
    protocols = ("new_model",) if args.only_new_model else ("loso", "in_source", "new_model")
    out = OUT_NEW_MODEL if args.only_new_model else OUT
    if chosen != list(SHORT):
        out = out.with_name(f"{out.stem}_{'_'.join(chosen)}.json")
    sources, inputs, vectors = prepare([args.data / s for s in SOURCES], load_embedder("all-MiniLM-L6-v2-static"), args.cache)
    base = PairBlendLearner(sources, inputs, vectors)
    fits: dict[bytes, PairBlendHead] = {}
    reports: list[dict[str, Any]] = []
    for short in chosen:
        name = SHORT[short]
        learner: PairBlendAcross
        if short == "default":
            learner = MmluBlendAcross(base, DEFAULT_WEIGHTS, name=name, fits=fits)
            settings: dict[str, Any] = {"weights": DEFAULT_WEIGHTS, "w_choice": learner.w_choice, "w_mmlu": learner.w_mmlu,
                                        "mmlu_part": {"source": learner.mmlu_source, "pair": list(learner.mmlu_pair),
                                                      "weights": learner.part_weights},
                                        "no routellm-mmlu training rows": "the pair-blend part alone (w_choice 1, no MMLU term)"}
        else:
            learner = PairBlendAcross(base, WEIGHTINGS[name], name=name, fits=fits)
            settings = {"weights": WEIGHTINGS[name]}
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
        report["settings"] = {**settings, "new traffic": LABELS, "new model": NEW_MODEL}
        report["command"] = ("python bench/across_sources_pair_blend.py --data ../shared/data" + (" --only-new-model" if args.only_new_model else "")
                             + (f" --routers {','.join(chosen)}" if chosen != list(SHORT) else ""))
        _print(report)
        reports.append(report)
    out.write_text(json.dumps({"routers": reports}, indent=1, default=float) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
