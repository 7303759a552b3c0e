"""The pair-blend head (:mod:`.pair_blend_head`) as a router under the across-sources protocols.

One fit per set of training rows (and hidden models) serves every weighting of the five signals, as in the
default selection (:mod:`.pair_blend_train`). Labels reach the head two ways (a gateway waits for
``min_labels`` = 40 before either; the protocols' N = 25 runs the same procedure on fewer):

- **new traffic** (the pair's models known or not, N labels of the pair's two columns): the gateway's
  :class:`~hybridgate.classifiers.adapt.Adapter` on the head's score, fitted on "the cloud was needed"
  (the strong model's grade above the weak one's) with the query vector as the extra input, and adopted
  only when it ranks a held-out quarter of the labels better than the head alone (ROC AUC), then refitted
  on every label, as ``serving/router_adapt.py`` does;
- **new model** (the pair's weak model hidden from training): its ability fitted on the labels' weak column
  by :func:`~hybridgate.classifiers.pair_score.fit_ability` from the prior (``SD_UNKNOWN``), adopted only
  when it predicts the held-out quarter's outcomes better than the prior (log-loss), then refitted on all:
  what the gateway does for this head (``serving/router_adapt.py``). While the prior is kept, the head
  scores with its pair-free part (:meth:`~.pair_blend_head.PairBlendHead.knows_pair`).

The default's recipe (``pair-blend-mmlu-static``, :class:`MmluBlendAcross`) is the same head at its weighting
plus ``blend-static``'s recipe refitted on the training rows' ``routellm-mmlu`` rows (:mod:`.pair_blend_mmlu`),
built as ``bench/default_choice.py`` builds the shipped one. Its labels take the same two paths (the MMLU part
has no label path of its own, as in a gateway). When the training rows hold no ``routellm-mmlu`` row (a member
of the MMLU family is scored, so the protocols keep every MMLU-sharing row out) the recipe has nothing to fit its
MMLU part on: no other source grades its pair, so it falls back to the pair-blend part alone, undamped on
multiple choice (at ``w_choice`` 0 with no MMLU term every exam question would score the same).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hybridgate.classifiers.across_sources import Pair
from hybridgate.classifiers.adapt import fit_adapter
from hybridgate.classifiers.blend_head import BlendHead
from hybridgate.classifiers.default_choice import MMLU, PAIR_MMLU
from hybridgate.classifiers.local_labels import HOLDOUT, SD_UNKNOWN, log_loss
from hybridgate.classifiers.numeric import auc
from hybridgate.classifiers.outcomes import canonical
from hybridgate.classifiers.pair_blend_head import PairBlendHead
from hybridgate.classifiers.pair_blend_mmlu import combine, fit_mmlu_part, mmlu_part_data
from hybridgate.classifiers.pair_blend_train import PairBlendLearner, pair_scores, training_set, weighted
from hybridgate.classifiers.pair_score import fit_ability, success
from hybridgate.classifiers.sources import Source


def held_quarter(src: Source, labels: np.ndarray) -> np.ndarray:
    """The label rows held out to judge an adaptation: a stable quarter by a hash of the prompt's sha256."""
    return np.array([int(hashlib.sha256(src.sha256[i].encode()).hexdigest()[:8], 16) / 2**32 < HOLDOUT for i in labels],
                    dtype=bool)


@dataclass
class FittedPairBlend:
    """A fitted head at one weighting, scoring a source's rows for a pair after its label rows."""

    head: PairBlendHead
    sources: Mapping[str, Source]
    inputs: Mapping[str, np.ndarray]
    vectors: Mapping[str, np.ndarray]
    hidden: frozenset[str]
    adopted: list[str] = field(default_factory=list)  # what each scoring with labels did, for the report

    def _is_hidden(self, name: str) -> bool:
        return name in self.hidden or canonical(name) in self.hidden

    def score(self, source: str, idx: np.ndarray, pair: Pair, labels: np.ndarray, *, seen_source: bool) -> np.ndarray:
        src = self.sources[source]
        x = self.inputs[source]
        labels = np.asarray(labels, dtype=np.intp)
        if len(labels) == 0:
            return pair_scores(self.head, x[idx], pair)
        head = self.head.with_pair(*pair)
        if self._is_hidden(pair[0]):
            return self._new_model(head, src, x, idx, pair, labels)
        return self._adapted(head, src, source, x, idx, pair, labels)

    def _new_model(
        self, head: PairBlendHead, src: Source, x: np.ndarray, idx: np.ndarray, pair: Pair, labels: np.ndarray
    ) -> np.ndarray:
        y = np.asarray(src.column(pair[0])[labels], dtype=np.float64)
        prior = head.outcome.pair()[0]
        u = head.outcome.model.latent(np.asarray(x[labels], dtype=np.float64))
        keep = ~np.isnan(y)
        held = held_quarter(src, labels) & keep
        fit_rows = ~held & keep
        if held.any() and fit_rows.any():
            trial = fit_ability(u[fit_rows], y[fit_rows], prior, *SD_UNKNOWN)
            if log_loss(success(u[held], trial), y[held]) < log_loss(success(u[held], prior), y[held]):
                head = head.with_local(fit_ability(u, y, prior, *SD_UNKNOWN))
                self.adopted.append(f"{src.name} N={len(labels)}: ability adopted")
                return np.asarray(head.score(np.asarray(x[idx], dtype=np.float32)), dtype=np.float64)
        self.adopted.append(f"{src.name} N={len(labels)}: prior kept")
        return np.asarray(head.score(np.asarray(x[idx], dtype=np.float32)), dtype=np.float64)

    def _adapted(
        self, head: PairBlendHead, src: Source, source: str, x: np.ndarray, idx: np.ndarray, pair: Pair, labels: np.ndarray
    ) -> np.ndarray:
        gain = src.column(pair[1])[labels] - src.column(pair[0])[labels]
        keep = ~np.isnan(gain)
        labels, y = labels[keep], (gain[keep] > 0).astype(np.float64)
        base = np.asarray(head.score(np.asarray(x[labels], dtype=np.float32)), dtype=np.float64)
        extra = np.asarray(self.vectors[source][labels], dtype=np.float64)
        out = np.asarray(head.score(np.asarray(x[idx], dtype=np.float32)), dtype=np.float64)
        held = held_quarter(src, labels)
        if held.all() or not held.any():
            self.adopted.append(f"{source} {pair[0]} N={len(labels)}: too few")
            return out
        trial = fit_adapter(base[~held], extra[~held], y[~held])
        before, after = auc(base[held], y[held]), auc(trial.apply(base[held], extra[held]), y[held])
        if before is None or after is None or after <= before:
            self.adopted.append(f"{source} {pair[0]} N={len(labels)}: kept")
            return out
        self.adopted.append(f"{source} {pair[0]} N={len(labels)}: adopted ({before:.3f} -> {after:.3f})")
        return fit_adapter(base, extra, y).apply(out, np.asarray(self.vectors[source][idx], dtype=np.float64))


@dataclass
class PairBlendAcross:
    """A :class:`~hybridgate.classifiers.across_sources.Learner` for the pair-blend head at one weighting; ``fits``
    may be shared between weightings (a dict keyed by training rows and hidden models)."""

    learner: PairBlendLearner
    weights: dict[str, float]
    name: str = "pair-blend"
    fits: dict[bytes, PairBlendHead] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)  # what every scoring with labels did (shared by its fits)

    def fit(self, rows: Mapping[str, np.ndarray], hidden: frozenset[str]) -> FittedPairBlend:
        key = _key(rows, hidden)
        if key not in self.fits:
            self.fits[key] = self.learner.fit(rows, hidden)
        head = weighted(self.fits[key], **self.weights)
        src = self.learner
        return FittedPairBlend(head, {s.name: s for s in src.sources}, src.inputs, src.vectors, hidden, self.log)


def _key(rows: Mapping[str, np.ndarray], hidden: frozenset[str]) -> bytes:
    return b"|".join(k.encode() + np.packbits(v).tobytes() for k, v in sorted(rows.items())) + b"#" + ",".join(sorted(hidden)).encode()


# The default's MMLU term: blend-static's own term weights (length, neighbours, topic, rules), as in
# bench/default_choice.py's "MMLU blend".
MMLU_BLEND_PART = {"w_length": 1.0, "w_neighbours": 1.0, "w_topic": 2.0, "w_rules": 2.0}


@dataclass
class MmluBlendAcross(PairBlendAcross):
    """The default's recipe (:class:`~.pair_blend_mmlu.MmluBlendHead`): the pair-blend head at ``weights``, its
    terms times ``w_choice`` on multiple-choice queries, plus ``w_mmlu`` times ``blend-static``'s recipe refitted on
    the training rows' ``mmlu_source`` rows (``mmlu_pair``'s gain), the Platt scale refitted on the sum, as
    ``bench/default_choice.py`` ships it. With no such row to fit on (or a model of ``mmlu_pair`` hidden) the fit
    is the pair-blend part alone at ``w_choice`` 1, and ``log`` says so."""

    w_mmlu: float = 0.25
    w_choice: float = 0.0
    part_weights: dict[str, float] = field(default_factory=lambda: dict(MMLU_BLEND_PART))
    mmlu_source: str = MMLU
    mmlu_pair: Pair = PAIR_MMLU
    part_settings: dict[str, Any] = field(default_factory=dict)  # the MMLU part's (BlendHead's defaults unless set)
    parts: dict[bytes, tuple[BlendHead, np.ndarray] | None] = field(default_factory=dict)
    built: dict[bytes, PairBlendHead] = field(default_factory=dict)

    def part(self, rows: Mapping[str, np.ndarray], hidden: frozenset[str]) -> tuple[BlendHead, np.ndarray] | None:
        """The MMLU part fitted on ``rows``' MMLU rows and its training inputs; None when it has nothing to fit."""
        mask = rows.get(self.mmlu_source)
        if mask is None or hidden & {*self.mmlu_pair, *map(canonical, self.mmlu_pair)}:
            return None
        key = np.packbits(mask).tobytes()
        if key not in self.parts:
            src = next(s for s in self.learner.sources if s.name == self.mmlu_source)
            data = mmlu_part_data(src, self.learner.inputs[self.mmlu_source], mask, self.mmlu_pair)
            emb_dim = self.learner.vectors[self.mmlu_source].shape[1]
            self.parts[key] = (fit_mmlu_part(data, emb_dim, **self.part_settings), data.x) if len(data.x) else None
        return self.parts[key]

    def fit(self, rows: Mapping[str, np.ndarray], hidden: frozenset[str]) -> FittedPairBlend:
        fitted = super().fit(rows, hidden)
        key = _key(rows, hidden)
        if key not in self.built:
            part = self.part(rows, hidden)
            if part is None:
                self.log.append(f"fit on {', '.join(sorted(rows))} (hidden: {', '.join(sorted(hidden)) or 'none'}): no "
                                f"{self.mmlu_source} rows, the pair-blend part alone (w_choice 1)")
                self.built[key] = fitted.head
            else:
                data = training_set(self.learner.sources, self.learner.inputs, rows, hidden)
                self.built[key] = combine(fitted.head, part[0], part[1], self.w_mmlu, data, self.w_choice, **self.part_weights)
        fitted.head = self.built[key]
        return fitted


def catalogue_free(fitted: FittedPairBlend, source: str, idx: np.ndarray) -> np.ndarray:
    """Scores with neither model of the pair known: the head's pair-free part."""
    return pair_scores(fitted.head, fitted.inputs[source][idx], None)
