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

With a ``bar`` (``blend-static``'s recipe, refitted on the same rows as each
candidate), MMLU is part of the selection: a candidate is *eligible* only when
it is at least the bar on both inner MMLU gates (:func:`inner_mmlu_gates`: the
in-distribution and transfer gates cut inside ``routellm-mmlu``'s train split),
and the winner is the best eligible one on the fair mean; with none eligible,
``blend-static`` stays. So the test-split MMLU gates, which the winner must still
pass, are no longer a filter the selection never saw.

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
# The router every candidate is measured against: the default the "no regression" figures are blend-static's
# (MMLU in-distribution 0.640, transfer 0.606), and its recipe is the inner MMLU gates' bar.
REFERENCE = "blend-static"
# The default router shipped now: the selection's winner that passed every gate (bench/default_choice.py,
# docs/across-sources.md "The default router"); classifiers/artifact.DEFAULT_ROUTER names the same folder.
DEFAULT = "pair-blend-mmlu-static"
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
    bar: dict[str, float] = field(default_factory=dict)  # the reference's recipe on the inner MMLU gates (empty: no bar)

    def verdict(self) -> dict[str, Any]:
        """Whether the winner replaces the reference default (``blend-static``), and each gate it failed with the
        shortfall."""
        failed = {}
        if self.winner == REFERENCE:
            eligible = [n for n, row in self.selection.items() if row.get("eligible") and n != REFERENCE]
            failed["selection"] = ("no candidate reaches the reference's recipe on both inner MMLU gates" if self.bar and not eligible
                                   else "the reference itself wins the selection")
        else:
            key = "fair_mean" if self.fair else "mean"
            gap = self.selection[self.winner][key] - self.selection.get(REFERENCE, {key: 0.0})[key]
            if gap <= 0:
                failed["selection"] = f"{gap:+.4f} against {REFERENCE}"
        for gate, (got, need) in self.gates.items():
            if got < need:
                failed[gate] = f"{got:.4f} < {need:.4f} (short by {need - got:.4f})"
        for gate, (got, most) in self.limits.items():
            if got > most:
                failed[gate] = f"{got:.4f} > {most:.4f} (over by {got - most:.4f})"
        return {"winner": self.winner, "replaces_default": not failed, "failed": failed}

    def as_dict(self) -> dict[str, Any]:
        return {"inner_cut": INNER_CUT, "chosen_on": list(self.fair), "inner_mmlu_bar": self.bar, "selection": self.selection,
                "winner": self.winner, "test": self.test,
                "gates": {k: {"got": g, "need": n} for k, (g, n) in self.gates.items()},
                "limits": {k: {"got": g, "at_most": n} for k, (g, n) in self.limits.items()}, "verdict": self.verdict()}


def choose_default(
    sources: Sequence[Source],
    candidates: Mapping[str, Callable[[Mapping[str, np.ndarray]], Scores]],
    fixed: Mapping[str, Scores] | None = None,
    reference: Mapping[str, Scores] | None = None,
    seen: Mapping[str, Sequence[str]] | None = None,
    bar: Callable[[Mapping[str, np.ndarray]], Scores] | None = None,
) -> Choice:
    """Select on inner validation, then score every test split once.

    ``candidates`` are fitted twice by the caller's function of training rows (source -> mask): on the inner-train
    rows for the selection, then on every train split for the test; ``fixed`` routers are scored as they are;
    ``reference`` (random, length, the rule scorer) is reported beside them and never wins; ``seen`` names, per
    fixed router, the sources whose rows (or questions) it was fitted on: the winner is chosen on the others.
    ``bar`` (the reference's recipe, a function of training rows like a candidate's) makes MMLU part of the choice:
    only candidates at least the bar on both :func:`inner_mmlu_gates` (and the reference itself) may win. A fixed
    router other than the reference cannot be refitted on the gates' rows, so with a bar it is reported, never chosen.
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
    eligible = list(scorers)
    need: dict[str, float] = {}
    if bar is not None:
        need = inner_mmlu_gates(sources, bar)
        eligible = [n for n in (fixed or {}) if n == REFERENCE]
        for n, make in candidates.items():
            got = inner_mmlu_gates(sources, make)
            selection[n]["inner_mmlu"] = got
            selection[n]["eligible"] = meets(got, need)
            if selection[n]["eligible"]:
                eligible.append(n)
        if REFERENCE in selection:
            selection[REFERENCE]["eligible"] = REFERENCE in eligible
    if not eligible:
        raise ValueError("no router may win: give the reference as a fixed router, or a candidate that meets the bar")
    winner = max(eligible, key=lambda n: selection[n]["fair_mean"])
    final = {n: make({s.name: s.train for s in sources}) for n, make in candidates.items()}
    test_masks = {s.name: ~s.train for s in sources}
    test = score_table(sources, {**final, **(fixed or {}), **(reference or {})}, test_masks)
    return Choice(selection, winner, test, fair=fair, bar=need)


def meets(got: Mapping[str, float], need: Mapping[str, float]) -> bool:
    """Whether every gate in ``need`` is reached (at least the bar's figure, to the 4 decimals APGR is kept to)."""
    return all(round(float(got[k]), 4) >= round(float(v), 4) for k, v in need.items())





MMLU = "routellm-mmlu"
PAIR_MMLU: Pair = ("mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview")


def _mmlu_training(sources: Sequence[Source], mmlu_rows: np.ndarray, inner: bool = False) -> dict[str, np.ndarray]:
    """Training rows when MMLU is scored: ``mmlu_rows`` of routellm-mmlu and the other train splits (their
    inner-train rows when ``inner``) less every row that shares MMLU's questions (all of mmlu-pro, llmrouter's
    ``mmlu`` task)."""
    out = {}
    for s in sources:
        rows = mmlu_rows if s.name == MMLU else (inner_split(s)[0] if inner else s.train) & ~s.mmlu_rows
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


def inner_mmlu_gates(sources: Sequence[Source], make: Callable[[Mapping[str, np.ndarray]], Scores]) -> dict[str, float]:
    """The two MMLU gates of :func:`mmlu_gates` cut inside ``routellm-mmlu``'s train split, so the selection can
    ask them without reading a test row: in-distribution (fitted on its inner-train rows, with the other sources'
    inner-train rows; its inner-validation rows scored) and transfer (the same 5 subject folds: fitted on the train
    rows of the other folds' subjects, the fold's own train rows scored; the mean APGR over folds, so every train
    row is scored once by a fit that never saw its subject). MMLU-sharing rows of the other sources stay out of
    training, as in the test-split gates."""
    from hybridgate.classifiers.protocols import FOLDS, subject_fold

    src = next(s for s in sources if s.name == MMLU)
    pair = src.pairs()[0] if src.pairs() else PAIR_MMLU
    fit, val = inner_split(src)
    idx = _rows(src, pair, val)
    got = {"in_distribution": summary(src, pair, idx, np.asarray(make(_mmlu_training(sources, fit, inner=True))(src, idx, pair)))["apgr"]}
    fold = np.array([subject_fold(g) for g in src.groups])
    per = []
    for k in range(FOLDS):
        idx = _rows(src, pair, src.train & (fold == k))
        if len(idx) == 0:
            continue
        scores = make(_mmlu_training(sources, src.train & (fold != k)))(src, idx, pair)
        per.append(summary(src, pair, idx, np.asarray(scores))["apgr"])
    got["transfer"] = round(float(np.mean(per)), 4)
    return got


__all__ = ["DEFAULT", "REFERENCE", "Choice", "choose_default", "inner_mmlu_gates", "inner_split", "meets", "mmlu_gates", "ranking_guard", "score_table",
           "test_rows"]
