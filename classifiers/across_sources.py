"""The across-sources protocols of ``shared/docs/routing-benchmark.md`` (*Across sources*), for any router.

- **leave one source out**: train on the other sources (all rows, any model),
  score the source's test split on its pairs;
- **in source**: train on every source's train split, score each test split;
- **new traffic from N labels**: the leave-one-source-out router plus the held-out
  source's first N train rows (by sha256), carrying only the pair's two columns;
- **new model from N labels**: one model's column held out of training in every
  source, then its first N train rows of outcomes given.

Rows of the MMLU family (``routellm-mmlu``, ``mmlu-pro``, ``llmrouter``'s
``mmlu`` task) are kept out of training whenever another member is scored.
Every protocol reports APGR, CPT(50 %) and CPT(80 %) per source and pair, the
mean over a source's pairs, and the mean over sources; :func:`baselines` scores
random, prompt length and a rule score on the same rows.

A router enters as a :class:`Learner`: ``fit(rows, hidden)`` on boolean masks of
each source's rows, with the models in ``hidden`` never seen, returning a
:class:`Fitted` that scores a source's rows for a pair, given label rows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from hybridgate.classifiers.metrics import routing_curve
from hybridgate.classifiers.sources import MMLU_FAMILY, NEW_MODEL_PAIRS, Source

NS: tuple[int, ...] = (0, 25, 50, 100, 200)
Pair = tuple[str, str]


class Fitted(Protocol):
    def score(self, source: str, idx: np.ndarray, pair: Pair, labels: np.ndarray, *, seen_source: bool) -> np.ndarray:
        """Scores of ``source``'s rows ``idx`` for ``pair`` (weak, strong), after the label rows ``labels``."""
        ...


class Learner(Protocol):
    name: str

    def fit(self, rows: Mapping[str, np.ndarray], hidden: frozenset[str]) -> Fitted: ...


def in_family(src: Source) -> bool:
    return src.name in MMLU_FAMILY or src.name == "llmrouter"


def training_rows(sources: Sequence[Source], target: str | None, *, leave_out: bool) -> dict[str, np.ndarray]:
    """Rows each source gives to training when ``target`` is scored.

    ``leave_out``: the target contributes nothing and the others all their rows;
    otherwise every source gives its train split. When the target is in the MMLU
    family, the other sources' MMLU rows are left out too.
    """
    tgt = next((s for s in sources if s.name == target), None)
    out: dict[str, np.ndarray] = {}
    for s in sources:
        if leave_out and s.name == target:
            continue
        rows = np.ones(len(s), dtype=bool) if leave_out else s.train.copy()
        if tgt is not None and in_family(tgt) and s.name != target:
            rows &= ~s.mmlu_rows
        if rows.any():
            out[s.name] = rows
    return out


def first_train_rows(src: Source, n: int) -> np.ndarray:
    """The first ``n`` train rows by prompt sha256: the labels a gateway has after a while of this traffic."""
    idx = np.nonzero(src.train)[0]
    sha = src.sha256
    return idx[np.argsort([sha[i] for i in idx], kind="stable")][:n]


def test_rows(src: Source, pair: Pair) -> np.ndarray:
    """Test rows where both models of the pair are graded."""
    w, s = src.column(pair[0]), src.column(pair[1])
    return np.nonzero(~src.train & ~np.isnan(w) & ~np.isnan(s))[0]


def summary(src: Source, pair: Pair, idx: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    sha = src.sha256
    curve = routing_curve(scores, src.column(pair[0])[idx], src.column(pair[1])[idx], [sha[i] for i in idx])
    return {"weak": pair[0], "strong": pair[1], "n_test": int(len(idx)), **curve.summary()}


def _per_source(results: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, pairs in results.items():
        out[name] = {"mean_apgr": round(float(np.mean([p["apgr"] for p in pairs])), 4), "pairs": pairs}
    out_mean = round(float(np.mean([v["mean_apgr"] for v in out.values()])), 4) if out else None
    return {"sources": out, "mean_apgr": out_mean}


def leave_one_source_out(sources: Sequence[Source], learner: Learner, ns: Sequence[int] = NS) -> dict[str, Any]:
    """Leave one source out (N = 0) and new traffic from N labels, from one fit per held-out source."""
    by_n: dict[int, dict[str, list[dict[str, Any]]]] = {n: {} for n in ns}
    for src in sources:
        fitted = learner.fit(training_rows(sources, src.name, leave_out=True), frozenset())
        for pair in src.pairs():
            idx = test_rows(src, pair)
            for n in ns:
                scores = fitted.score(src.name, idx, pair, first_train_rows(src, n), seen_source=False)
                by_n[n].setdefault(src.name, []).append(summary(src, pair, idx, scores))
    return {str(n): _per_source(r) for n, r in by_n.items()}


def in_source(sources: Sequence[Source], learner: Learner) -> dict[str, Any]:
    results: dict[str, list[dict[str, Any]]] = {}
    cache: dict[bytes, Fitted] = {}
    for src in sources:
        rows = training_rows(sources, src.name, leave_out=False)
        key = b"".join(k.encode() + np.packbits(v).tobytes() for k, v in sorted(rows.items()))
        fitted = cache.get(key) or cache.setdefault(key, learner.fit(rows, frozenset()))
        for pair in src.pairs():
            idx = test_rows(src, pair)
            scores = fitted.score(src.name, idx, pair, np.zeros(0, dtype=int), seen_source=True)
            results.setdefault(src.name, []).append(summary(src, pair, idx, scores))
    return _per_source(results)


def new_model(
    sources: Sequence[Source], learner: Learner, ns: Sequence[int] = NS, canonical: Callable[[str], str] = lambda n: n
) -> dict[str, Any]:
    """Each source's new-model pair: the model held out everywhere (by its catalogue name), then N of its labels.

    ``all`` is the same router given all of the model's train labels in that source.
    """
    out: dict[str, Any] = {}
    for src in sources:
        if src.name not in NEW_MODEL_PAIRS:
            continue
        pair = NEW_MODEL_PAIRS[src.name]
        hidden = frozenset({canonical(pair[0])})
        fitted = learner.fit(training_rows(sources, src.name, leave_out=False), hidden)
        idx = test_rows(src, pair)
        row: dict[str, Any] = {"weak": pair[0], "strong": pair[1]}
        for n in [*ns, None]:
            labels = np.nonzero(src.train)[0] if n is None else first_train_rows(src, n)
            scores = fitted.score(src.name, idx, pair, labels, seen_source=True)
            row["all" if n is None else str(n)] = summary(src, pair, idx, scores)["apgr"]
        out[src.name] = row
    return out


def baselines(sources: Sequence[Source], rule: Callable[[Sequence[str]], np.ndarray]) -> dict[str, Any]:
    """Random (mean over 5 seeds), prompt length and the rule score on every source's test rows, per pair."""
    out: dict[str, dict[str, Any]] = {"random": {}, "length": {}, "rule": {}}
    for src in sources:
        for pair in src.pairs():
            idx = test_rows(src, pair)
            texts = [src.prompts[i] for i in idx]
            rnd = [summary(src, pair, idx, np.random.default_rng(seed).random(len(idx))) for seed in range(5)]
            r0 = dict(rnd[0])
            r0["apgr"] = round(float(np.mean([r["apgr"] for r in rnd])), 4)
            out["random"].setdefault(src.name, []).append(r0)
            out["length"].setdefault(src.name, []).append(summary(src, pair, idx, np.array([len(t) for t in texts], dtype=np.float64)))
            out["rule"].setdefault(src.name, []).append(summary(src, pair, idx, np.asarray(rule(texts), dtype=np.float64)))
    return {k: _per_source(v) for k, v in out.items()}


@dataclass(frozen=True)
class AcrossReport:
    """Every protocol's numbers for one router, beside the baselines on the same rows."""

    router: str
    baselines: dict[str, Any]
    loso: dict[str, Any] | None = None
    in_source: dict[str, Any] | None = None
    new_model: dict[str, Any] | None = None

    def row(self) -> dict[str, Any]:
        return {"router": self.router, "baselines": self.baselines, "leave_one_source_out": self.loso,
                "in_source": self.in_source, "new_model": self.new_model}


def run_all(
    sources: Sequence[Source],
    learner: Learner,
    rule: Callable[[Sequence[str]], np.ndarray],
    *,
    ns: Sequence[int] = NS,
    canonical: Callable[[str], str] = lambda n: n,
    protocols: Sequence[str] = ("loso", "in_source", "new_model"),
) -> AcrossReport:
    return AcrossReport(
        learner.name,
        baselines(sources, rule),
        leave_one_source_out(sources, learner, ns) if "loso" in protocols else None,
        in_source(sources, learner) if "in_source" in protocols else None,
        new_model(sources, learner, ns, canonical) if "new_model" in protocols else None,
    )
