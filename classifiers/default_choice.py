"""Choosing the default router on the train splits alone, then scoring the test splits once.

Every source's train split is cut again by sha256 (:data:`INNER_CUT`, on the digest's next 8 hex digits): a
candidate that learns is fitted on the inner-train rows of every source, and
every candidate is scored on each source's inner-validation rows, for each of
its pairs, with no labels and no source name (what a gateway meets). The best
mean APGR over the sources is the selection's winner; only then are the test
splits read, once, for the report. A fixed router (``blend-static``, fitted on
``routellm-mmlu``'s whole train split) is scored on the same inner-validation
rows; where it was fitted on them (or on the same questions: ``seen``), its
figure would be in-sample, so the winner is chosen on the mean over the sources
no compared router has seen (each source's figure is still reported).

The winner replaces the default only if it also beats ``blend-static`` on the
selection and passes the gates the caller measures under the embedded default
configuration (the 40-prompt ranking guard, MMLU in-distribution and
transfer, :func:`mmlu_gates`) and stays within its limits (a decision's
latency): :meth:`Choice.verdict` says which failed and by how much.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hybridgate.classifiers.across_sources import Pair, summary, test_rows
from hybridgate.classifiers.data import prompt_sha256
from hybridgate.classifiers.sources import Source

INNER_CUT = 0.7  # of a source's train rows, the share (by sha256) an inner candidate is fitted on
DEFAULT = "blend-static"
# A router scores a source's rows ``idx`` for ``pair`` with no labels: what every candidate is reduced to here.
Scores = Callable[[Source, np.ndarray, Pair], np.ndarray]


def inner_split(src: Source) -> tuple[np.ndarray, np.ndarray]:
    """(inner-train, inner-validation) masks: the source's train rows cut again at INNER_CUT, by the sha256's
    *next* 8 hex digits (the first 8 made the outer split, so they would put every train row on one side)."""
    inner = np.array([int(prompt_sha256(p)[8:16], 16) / 2**32 < INNER_CUT for p in src.prompts], dtype=bool)
    return src.train & inner, src.train & ~inner


def ranking_guard(scores: np.ndarray, hard: np.ndarray) -> float:
    """The 40-prompt guard's figure: the share of (hard, easy) prompt pairs a score ranks hard above easy."""
    scores = np.asarray(scores, dtype=np.float64)
    return float(np.mean(scores[hard][:, None] > scores[~hard][None, :]))


def _rows(src: Source, pair: Pair, mask: np.ndarray) -> np.ndarray:
    w, s = src.column(pair[0]), src.column(pair[1])
    return np.nonzero(mask & ~np.isnan(w) & ~np.isnan(s))[0]


def score_table(sources: Sequence[Source], candidates: Mapping[str, Scores], masks: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Each candidate's APGR per source (mean over its pairs) on the rows ``masks`` marks, and the mean over sources."""
    out: dict[str, Any] = {}
    for name, scores in candidates.items():
        per = {}
        for src in sources:
            vals = []
            for pair in src.pairs():
                idx = _rows(src, pair, masks[src.name])
                vals.append(summary(src, pair, idx, np.asarray(scores(src, idx, pair), dtype=np.float64))["apgr"])
            per[src.name] = round(float(np.mean(vals)), 4)
        out[name] = {"sources": per, "mean": round(float(np.mean(list(per.values()))), 4)}
    return out


@dataclass
class Choice:
    """The selection (inner validation), the winner, and the test splits scored once."""

    selection: dict[str, Any]
    winner: str
    test: dict[str, Any]
    gates: dict[str, Any] = field(default_factory=dict)
    fair: tuple[str, ...] = ()  # the sources the winner was chosen on (no compared router saw their rows)
    limits: dict[str, tuple[float, float]] = field(default_factory=dict)  # (got, most allowed): e.g. a latency

    def verdict(self) -> dict[str, Any]:
        """Whether the winner replaces the default, and each gate it failed with the shortfall."""
        failed = {}
        if self.winner == DEFAULT:
            failed["selection"] = "the default itself wins the selection"
        else:
            key = "fair_mean" if self.fair else "mean"
            gap = self.selection[self.winner][key] - self.selection.get(DEFAULT, {key: 0.0})[key]
            if gap <= 0:
                failed["selection"] = f"{gap:+.4f} against {DEFAULT}"
        for gate, (got, need) in self.gates.items():
            if got < need:
                failed[gate] = f"{got:.4f} < {need:.4f} (short by {need - got:.4f})"
        for gate, (got, most) in self.limits.items():
            if got > most:
                failed[gate] = f"{got:.4f} > {most:.4f} (over by {got - most:.4f})"
        return {"winner": self.winner, "replaces_default": not failed, "failed": failed}

    def as_dict(self) -> dict[str, Any]:
        return {"inner_cut": INNER_CUT, "chosen_on": list(self.fair), "selection": self.selection, "winner": self.winner, "test": self.test,
                "gates": {k: {"got": g, "need": n} for k, (g, n) in self.gates.items()},
                "limits": {k: {"got": g, "at_most": n} for k, (g, n) in self.limits.items()}, "verdict": self.verdict()}


def choose_default(
    sources: Sequence[Source],
    candidates: Mapping[str, Callable[[Mapping[str, np.ndarray]], Scores]],
    fixed: Mapping[str, Scores] | None = None,
    reference: Mapping[str, Scores] | None = None,
    seen: Mapping[str, Sequence[str]] | None = None,
) -> Choice:
    """Select on inner validation, then score every test split once.

    ``candidates`` are fitted twice by the caller's function of training rows (source -> mask): on the inner-train
    rows for the selection, then on every train split for the test; ``fixed`` routers are scored as they are;
    ``reference`` (random, length, the rule scorer) is reported beside them and never wins; ``seen`` names, per
    fixed router, the sources whose rows (or questions) it was fitted on: the winner is chosen on the others.
    """
    inner = {s.name: inner_split(s) for s in sources}
    fitted_inner = {n: make({k: v[0] for k, v in inner.items()}) for n, make in candidates.items()}
    scorers = {**fitted_inner, **(fixed or {})}
    val = {k: v[1] for k, v in inner.items()}
    selection = score_table(sources, {**scorers, **(reference or {})}, val)
    unseen = {s.name for s in sources} - {x for names in (seen or {}).values() for x in names}
    fair = tuple(s.name for s in sources if s.name in unseen) or tuple(s.name for s in sources)
    for row in selection.values():
        row["fair_mean"] = round(float(np.mean([row["sources"][n] for n in fair])), 4)
    winner = max(scorers, key=lambda n: selection[n]["fair_mean"])
    final = {n: make({s.name: s.train for s in sources}) for n, make in candidates.items()}
    test_masks = {s.name: ~s.train for s in sources}
    test = score_table(sources, {**final, **(fixed or {}), **(reference or {})}, test_masks)
    return Choice(selection, winner, test, fair=fair)





MMLU = "routellm-mmlu"
PAIR_MMLU: Pair = ("mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview")


def _mmlu_training(sources: Sequence[Source], mmlu_rows: np.ndarray) -> dict[str, np.ndarray]:
    """Training rows when MMLU is scored: ``mmlu_rows`` of routellm-mmlu and the other train splits less every
    row that shares MMLU's questions (all of mmlu-pro, llmrouter's ``mmlu`` task)."""
    out = {}
    for s in sources:
        rows = mmlu_rows if s.name == MMLU else s.train & ~s.mmlu_rows
        if rows.any():
            out[s.name] = rows
    return out


def mmlu_gates(sources: Sequence[Source], make: Callable[[Mapping[str, np.ndarray]], Scores]) -> dict[str, float]:
    """The two MMLU gates for a candidate fitted by ``make``: in-distribution (routellm-mmlu's train split,
    its test split scored) and transfer (5 folds of subjects by :func:`~.protocols.subject_fold`: fit without the
    fold's subjects, score the fold's test rows; the mean APGR), with MMLU-sharing rows of the other sources out
    of training both times, as the data READMEs ask."""
    from hybridgate.classifiers.protocols import FOLDS, subject_fold

    src = next(s for s in sources if s.name == MMLU)
    pair = src.pairs()[0] if src.pairs() else PAIR_MMLU
    train = src.train
    test = _rows(src, pair, ~train)
    got = {"in_distribution": summary(src, pair, test, np.asarray(make(_mmlu_training(sources, train))(src, test, pair)))["apgr"]}
    fold = np.array([subject_fold(g) for g in src.groups])
    per = []
    for k in range(FOLDS):
        idx = _rows(src, pair, ~train & (fold == k))
        scores = make(_mmlu_training(sources, train & (fold != k)))(src, idx, pair)
        per.append(summary(src, pair, idx, np.asarray(scores))["apgr"])
    got["transfer"] = round(float(np.mean(per)), 4)
    return got

__all__ = ["Choice", "choose_default", "inner_split", "mmlu_gates", "ranking_guard", "score_table", "test_rows"]
