"""``router compare``'s experiment as a function: every head (with and without text features) on every embedder,
and every baseline, through the protocols of :mod:`.protocols` (in-distribution, transfer, adaptation, a held-out
question set), one :class:`~hybridgate.classifiers.protocols.ProtocolResult` each.

The CLI loads the embedders, calls :func:`compare_heads`, prints the table and writes the JSON and the plots.
The rule scorer lives in the router package, which imports this one, so it comes in as a function.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hybridgate.classifiers.data import RoutingData
from hybridgate.classifiers.protocols import ADAPTATION_NS, FOLDS, Bench, ProtocolResult

Scores = Callable[[Sequence[str]], np.ndarray]  # prompts -> scores (the rule scorer)


@dataclass(frozen=True)
class Embedded:
    """One embedder's vectors of the compared rows and, when there is one, of the held-out set."""

    name: str
    dim: int
    engine: str
    vectors: np.ndarray
    heldout_vectors: np.ndarray | None = None


@dataclass
class Comparison:
    """The rows of the table, in its order, and what they were measured on."""

    data: RoutingData
    heldout: RoutingData | None
    protocols: dict[str, bool]  # transfer, adaptation: whether each was run
    n_train: int
    n_test: int
    results: list[ProtocolResult] = field(default_factory=list)
    embedders: list[dict[str, Any]] = field(default_factory=list)
    subject_prior_apgr: float | None = None  # the subject prior's APGR (knows the subject; no transfer), where it has one

    def title(self) -> str:
        held = self.heldout
        return f"{self.n_train} train / {self.n_test} test questions" + (f"; held out: {len(held)} from {held.source}" if held is not None else "")

    def summary(self) -> dict[str, Any]:
        """compare.json."""
        rows, held = self.data, self.heldout
        out: dict[str, Any] = {
            "data": {"source": rows.source, "weak": rows.weak_name, "strong": rows.strong_name, "n_train": self.n_train, "n_test": self.n_test},
            "heldout": None if held is None else {"source": held.source, "weak": held.weak_name, "strong": held.strong_name, "n": len(held)},
            "protocols": {"transfer_folds": FOLDS if self.protocols["transfer"] else 0,
                          "adaptation_n": [n if n is not None else "all" for n in ADAPTATION_NS]},
            "embedders": self.embedders,
            "results": [r.row() for r in self.results],
        }
        if self.subject_prior_apgr is not None:
            out["subject_prior_apgr"] = round(self.subject_prior_apgr, 4)
        return out


def default_heads() -> list[str]:
    """Every head ``router compare`` runs unless told which (the outcomes and pair-blend heads learn from many
    models' outcomes: the across-sources protocols and bench/default_choice.py measure them)."""
    from hybridgate.classifiers.heads import HEADS

    return [k for k in HEADS if k not in ("gd-logistic", "outcomes", "pair-blend", "pair-blend-mmlu")]


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """``HEAD:NAME=VALUE[,NAME=VALUE]`` -> the head and its settings; a ValueError (HeadError) says what is wrong."""
    from hybridgate.classifiers.heads import HEADS, parse_params

    kind, sep, settings = text.partition(":")
    if not sep or kind not in HEADS:
        raise ValueError(f"--variant takes HEAD:NAME=VALUE[,NAME=VALUE] with a known head, got {text!r}")
    return kind, parse_params([p for p in settings.split(",") if p])


def compare_heads(
    rows: RoutingData,
    embedded: Iterable[Embedded],
    kinds: Sequence[str],
    variants: Sequence[tuple[str, dict[str, Any]]] = (),
    *,
    rule_scores: Scores,
    heldout: RoutingData | None = None,
    transfer: bool = True,
    adaptation: bool = True,
) -> Comparison:
    """The table: the baselines (random, prompt length, the rule scorer) once, then every head in ``kinds`` (with
    and without text features, where the head does not read them already) and every variant, on each embedder
    of ``embedded`` (consumed one at a time, so a caller may load each embedder only when its turn comes)."""
    from hybridgate.classifiers.baselines import group_prior_scores, length_scores, random_scores
    from hybridgate.classifiers.evaluation import evaluate
    from hybridgate.classifiers.heads import HEADS
    from hybridgate.classifiers.protocols import adapter_inputs, evaluate_recipe, fixed_recipe, head_recipe

    unknown = [k for k in kinds if k not in HEADS]
    if unknown:
        raise ValueError(f"unknown head {unknown[0]!r}; the heads are {', '.join(HEADS)}")
    bench = Bench(rows)
    tr, te = rows.subset("train"), rows.subset("test")
    if len(tr) < 10 or len(te) == 0:
        raise ValueError(f"the split gives {len(tr)} train and {len(te)} test rows; need at least 10 and 1")
    held = heldout
    protocols = {"transfer": transfer and bench.has_folds, "adaptation": adaptation and bench.has_folds}
    out = Comparison(rows, held, protocols, len(tr), len(te))
    baselines_done = False
    for emb in embedded:
        out.embedders.append({"name": emb.name, "dim": emb.dim, "engine": emb.engine})
        vectors, hv = emb.vectors, emb.heldout_vectors
        if not baselines_done:
            baselines_done = True
            extra = adapter_inputs(vectors)
            baselines = [
                ("baseline: random", random_scores(rows), None if held is None else random_scores(held)),
                ("baseline: prompt length", length_scores(rows), None if held is None else length_scores(held)),
                ("baseline: rule scorer", rule_scores(rows.prompts), None if held is None else rule_scores(held.prompts)),
            ]
            for label, scores, hscores in baselines:
                out.results.append(evaluate_recipe(label, fixed_recipe(scores, extra, hscores), bench, heldout=held,
                                                  transfer=protocols["transfer"], adaptation=protocols["adaptation"]))
        # A head that reads the shape features has the text features' signals already.
        combos: list[tuple[str, dict[str, Any] | None, bool]] = [
            (k, None, f) for k in kinds for f in ((False,) if getattr(HEADS[k], "needs_shape", False) else (False, True))
        ]
        combos += [(k, p, False) for k, p in variants]
        for kind, params, feats in combos:
            label = f"{emb.name} · {kind}{' + text features' if feats else ''}"
            if params:
                label += " (" + ", ".join(f"{a}={b}" for a, b in params.items()) + ")"
            recipe = head_recipe(rows, vectors, kind, params, embedder=emb.name, features=feats, heldout=None if held is None or hv is None else (held, hv))
            out.results.append(evaluate_recipe(label, recipe, bench, heldout=held, settings={"head": kind, **(params or {})},
                                              transfer=protocols["transfer"], adaptation=protocols["adaptation"]))
    prior = group_prior_scores(tr, te)
    if prior is not None:
        out.subject_prior_apgr = evaluate("prior", prior, te).curve.apgr
    return out
