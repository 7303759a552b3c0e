"""The outcome model as a router under the across-sources protocols, and the query inputs it reads.

A query's inputs are its static vector and its shape features (length among
them): what the gateway computes per request with numpy alone. The learner fits
an :class:`~hybridgate.classifiers.outcomes.OutcomeModel` on the rows a protocol
gives it and scores a pair by the expected gain of its strong over its weak
model (:mod:`.pair_score`), after any label rows of that pair.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hybridgate.classifiers.across_sources import Pair
from hybridgate.classifiers.outcomes import Block, OutcomeModel, canonical
from hybridgate.classifiers.pair_score import Labels, ability_for, adapted
from hybridgate.classifiers.shape import shape_matrix
from hybridgate.classifiers.sources import Source


def query_inputs(vectors: np.ndarray, texts: Sequence[str], turns: Sequence[int] | None = None) -> np.ndarray:
    """What the outcome model reads of a query: its static vector, then its shape features."""
    return np.hstack([np.asarray(vectors, dtype=np.float64), shape_matrix(texts, turns).astype(np.float64)])


def source_block(src: Source, x: np.ndarray, rows: np.ndarray, hidden: frozenset[str]) -> Block:
    names = [canonical(m) for m in src.models]
    # Two columns of one source that alias to one model stay two models (e.g. a verbose and a concise variant).
    seen: set[str] = set()
    cols, out = [], []
    for j, n in enumerate(names):
        n = n if n not in seen else src.models[j]
        seen.add(n)
        if n in hidden or src.models[j] in hidden:
            continue
        cols.append(j)
        out.append(n)
    return Block(src.name, x[rows], src.outcomes[np.ix_(rows, np.asarray(cols, dtype=np.intp))] if cols else np.zeros((int(rows.sum()), 0)), out)


@dataclass
class FittedOutcomes:
    model: OutcomeModel
    sources: Mapping[str, Source]
    inputs: Mapping[str, np.ndarray]
    vectors: Mapping[str, np.ndarray]
    adapt: dict[str, float] = field(default_factory=dict)

    def score(self, source: str, idx: np.ndarray, pair: Pair, labels: np.ndarray, *, seen_source: bool) -> np.ndarray:
        src = self.sources[source]
        x, vec = self.inputs[source], self.vectors[source]
        scale = source if seen_source else None
        local = ability_for(self.model, pair[0], cloud=False, source=scale)
        cloud = ability_for(self.model, pair[1], cloud=True, source=scale)
        lab = None
        if len(labels):
            lab = Labels(
                self.model.latent(x[labels]), vec[labels], src.column(pair[0])[labels], src.column(pair[1])[labels],
                self.model.shape_part(x[labels]),
            )
        scorer = adapted(self.model, local, cloud, lab, **self.adapt)  # type: ignore[arg-type]
        if lab is None:
            return scorer.gain(self.model.latent(x[idx]))
        return scorer.gain(self.model.latent(x[idx]), vec[idx], self.model.shape_part(x[idx]))


@dataclass
class OutcomeLearner:
    sources: Sequence[Source]
    inputs: Mapping[str, np.ndarray]
    vectors: Mapping[str, np.ndarray]
    params: dict[str, Any] = field(default_factory=dict)
    adapt: dict[str, float] = field(default_factory=dict)
    name: str = "outcomes"

    def fit(self, rows: Mapping[str, np.ndarray], hidden: frozenset[str]) -> FittedOutcomes:
        by_name = {s.name: s for s in self.sources}
        blocks = [source_block(by_name[n], self.inputs[n], r, hidden) for n, r in rows.items()]
        om = OutcomeModel(**self.params).fit(blocks)
        return FittedOutcomes(om, by_name, self.inputs, self.vectors, dict(self.adapt))


def prepare(
    folders: Sequence[Any], embedder: Any, cache_dir: Any | None
) -> tuple[list[Source], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Sources read from ``folders``, and each one's query vectors and inputs (cached on disk when asked)."""
    from pathlib import Path

    from hybridgate.classifiers.embedding_cache import embed_cached
    from hybridgate.classifiers.sources import load_source

    sources = [load_source(Path(f)) for f in folders]
    inputs: dict[str, np.ndarray] = {}
    vectors: dict[str, np.ndarray] = {}
    for src in sources:
        vec = embed_cached(embedder, list(src.prompts), None if cache_dir is None else Path(cache_dir), f"embedding {src.name}")
        vectors[src.name] = vec.astype(np.float64)
        shape_path = None if cache_dir is None else Path(cache_dir) / f"shape-{src.name}-{len(src)}.npy"
        if shape_path is not None and shape_path.is_file():
            shape = np.load(shape_path, allow_pickle=False)
        else:
            shape = shape_matrix(src.prompts)
            if shape_path is not None:
                shape_path.parent.mkdir(parents=True, exist_ok=True)
                np.save(shape_path, shape)
        inputs[src.name] = np.hstack([vectors[src.name], shape.astype(np.float64)])
    return sources, inputs, vectors
