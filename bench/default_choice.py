"""Choosing the default router on the train splits alone (classifiers/default_choice.py), then the test splits once.

Candidates: the outcomes router's recipe (``across-static``'s), the outcomes + length stack
(classifiers/stack_score.py), both fitted on inner-train rows for the selection and on every train
split for the test; ``blend-static`` as shipped; random, prompt length and the rule scorer for
reference. The winner is chosen on the sources ``blend-static`` has not seen (it was fitted on
``routellm-mmlu``'s train split; ``mmlu-pro`` shares its questions). Gates for a winner other than ``blend-static``: the 40-prompt ranking guard and MMLU
in-distribution (``routellm-mmlu`` test split ≥ 0.640). Writes ``bench/results/default_choice.json``.

    python bench/default_choice.py [--data ../shared/data] [--cache /tmp/hybridgate-cache] [--length-weight 1.0]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from hybridgate.classifiers.across_train import ADAPT
from hybridgate.classifiers.artifact import SHIPPED, load_router
from hybridgate.classifiers.default_choice import DEFAULT, choose_default, ranking_guard
from hybridgate.classifiers.embedder import load_embedder
from hybridgate.classifiers.outcome_router import OutcomeLearner, prepare, query_inputs
from hybridgate.classifiers.stack_score import StackLearner, StackSettings
from hybridgate.cli_router import _rule_scores

SOURCES = ("routellm-mmlu", "mmlu-pro", "alpacaeval", "llmrouter")
OUT = Path(__file__).resolve().parent / "results" / "default_choice.json"
GUARD = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "easy_hard_prompts.jsonl"
NONE = np.zeros(0, dtype=int)
# blend-static was fitted on routellm-mmlu's train split; mmlu-pro and llmrouter's mmlu rows share its questions,
# so on those two sources its inner-validation figure is (partly) in-sample.
SEEN_BY_DEFAULT = ("routellm-mmlu", "mmlu-pro")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/hybridgate-cache"))
    ap.add_argument("--length-weight", type=float, default=StackSettings().length_weight)
    args = ap.parse_args()
    emb = load_embedder("all-MiniLM-L6-v2-static")
    sources, inputs, vectors = prepare([args.data / s for s in SOURCES], emb, args.cache)
    outcomes = OutcomeLearner(sources, inputs, vectors, {}, dict(ADAPT))
    stack = StackLearner(outcomes, StackSettings(length_weight=args.length_weight))
    fits: dict[bytes, object] = {}

    def fitted(rows: dict[str, np.ndarray]) -> object:
        key = b"".join(k.encode() + np.packbits(v).tobytes() for k, v in sorted(rows.items()))
        return fits.get(key) or fits.setdefault(key, outcomes.fit(rows, frozenset()))

    def recipe(rows):  # type: ignore[no-untyped-def]
        f = fitted(rows)
        return lambda src, idx, pair: f.score(src.name, idx, pair, NONE, seen_source=False)  # type: ignore[attr-defined]

    def stacked(rows):  # type: ignore[no-untyped-def]
        f = stack.wrap(fitted(rows))  # type: ignore[arg-type]
        return lambda src, idx, pair: f.score(src.name, idx, pair, NONE, seen_source=False)

    blend = load_router(SHIPPED / DEFAULT, embedder=emb.name, dim=emb.dim)
    fixed = {DEFAULT: lambda src, idx, pair: blend.score(vectors[src.name][idx].astype(np.float32), [src.prompts[i] for i in idx])}
    reference = {
        "length": lambda src, idx, pair: np.array([len(src.prompts[i]) for i in idx], dtype=np.float64),
        "rule": lambda src, idx, pair: np.asarray(_rule_scores([src.prompts[i] for i in idx]), dtype=np.float64),
        "random": lambda src, idx, pair: np.random.default_rng(0).random(len(idx)),
    }
    choice = choose_default(sources, {"across-static recipe": recipe, f"stack (length weight {args.length_weight})": stacked},
                            fixed, reference, seen={DEFAULT: SEEN_BY_DEFAULT})
    if choice.winner != DEFAULT:
        rows = [json.loads(line) for line in GUARD.read_text(encoding="utf-8").splitlines() if line.strip()]
        texts = [r["prompt"] for r in rows]
        hard = np.array([r["difficulty"] == "hard" for r in rows])
        final = fitted({s.name: s.train for s in sources})
        x = query_inputs(emb.encode(texts), texts)
        if choice.winner.startswith("stack"):
            length = x[:, stack.wrap(final).length_col]  # type: ignore[arg-type]
            u = final.model.latent(x)  # type: ignore[attr-defined]
            from hybridgate.classifiers.pair_score import PairScorer, ability_for

            pair = PairScorer(ability_for(final.model, None, cloud=False), ability_for(final.model, None, cloud=True))  # type: ignore[attr-defined]
            g = pair.prior_gain(u)
            guard_scores = (g - g.mean()) / g.std() + args.length_weight * (length - length.mean()) / length.std()
        else:
            from hybridgate.classifiers.pair_score import PairScorer, ability_for

            pair = PairScorer(ability_for(final.model, None, cloud=False), ability_for(final.model, None, cloud=True))  # type: ignore[attr-defined]
            guard_scores = pair.prior_gain(final.model.latent(x))  # type: ignore[attr-defined]
        choice.gates["40-prompt guard (catalogue-free)"] = (round(ranking_guard(guard_scores, hard), 4), 0.9)
        choice.gates["MMLU in-distribution (routellm-mmlu test)"] = (choice.test[choice.winner]["sources"]["routellm-mmlu"], 0.640)
    out = choice.as_dict()
    for name in out["selection"]:
        sel = out["selection"][name]
        print(f"{name:34s} selection {sel['mean']:.4f} (on {', '.join(out['chosen_on'])}: {sel['fair_mean']:.4f}) {sel['sources']}")
        print(f"{'':34s} test      {out['test'][name]['mean']:.4f} {out['test'][name]['sources']}")
    print(json.dumps(out["verdict"], indent=1))
    OUT.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
