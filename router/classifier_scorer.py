"""The trained embedding classifier behind the :class:`~hybridgate.router.Scorer` seam.

Embedding a query is computation, not I/O: the model and the router's arrays
are loaded by the gateway before the first request, so the policy stays pure.
An :class:`~hybridgate.classifiers.adapt.Adapter` learnt from this gateway's own
labels (``serving/router_adapt.py``) may sit on top of the shipped router.

A :class:`Classifier` is immutable: a new router version or a new adapter is a
new one. The :class:`ClassifierScorer` a gateway is built with is a live handle
on the classifier in use: it keeps it in a
:class:`~hybridgate.router.snapshot.SnapshotSlot`, which the policy built on it
shares with its thresholds, so a reload, an adoption or a recalibration is one
assignment and a decision sees one whole snapshot (``router/snapshot.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from hybridgate.classifiers.adapt import Adapter, logit
from hybridgate.classifiers.embedder import Embedder
from hybridgate.classifiers.model import RouterModel
from hybridgate.router.decision import RouteQuery, Signal
from hybridgate.router.snapshot import LiveScorer, RoutingSnapshot, SnapshotSlot

TOP_SIGNALS = 3
# The router's own scores of the last decisions, by (text, turns), for the label each answer keeps: the same
# number, so the head (the costliest step of a decision) is not evaluated twice per request.
_REMEMBERED = 256


def _score_push(z: float, push: float) -> float:
    """How far the score (a probability) moved because of one log-odds term."""
    return float(1 / (1 + np.exp(-z)) - 1 / (1 + np.exp(-(z - push))))


@dataclass(frozen=True)
class Classifier:
    """One router model, the embedder it reads, and this gateway's correction of it, as one value."""

    model: RouterModel
    embedder: Embedder
    adapter: Adapter | None = None
    # A new classifier (a reload, an adapter) starts with none: its own model scores the next label.
    _scored: dict[tuple[str, int], float] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.embedder.name != self.model.embedder or self.embedder.dim != self.model.dim:
            raise ValueError(
                f"router {self.model.name} was trained on {self.model.embedder} ({self.model.dim} dimensions), "
                f"not {self.embedder.name} ({self.embedder.dim})"
            )

    @property
    def name(self) -> str:
        """The router's name, and for a router that scores a pair, the two abilities it uses."""
        return _name_of(self.model)

    @property
    def version(self) -> str:
        return self.model.version

    def score(self, query: RouteQuery) -> float:
        return self.score_explained(query)[0]

    def score_explained(self, query: RouteQuery) -> tuple[float, tuple[Signal, ...]]:
        """The score and the few signals that moved it most, each as its push on the score."""
        return self.score_named(query)[:2]

    def score_named(self, query: RouteQuery) -> tuple[float, tuple[Signal, ...], str]:
        """The score, its signals and the name of the router (with the abilities it used) that gave them."""
        model, adapter = self.model, self.adapter
        vectors = self.embedder.encode([query.text])
        base, explained = model.score_explained(model.inputs(vectors, [query.text], [query.n_messages]))
        remembered = self._scored
        remembered[(query.text, query.n_messages)] = base
        while len(remembered) > _REMEMBERED:
            remembered.pop(next(iter(remembered)), None)
        score = base if adapter is None else float(adapter.apply(np.array([base]), vectors)[0])
        z = float(logit(np.array([score]))[0])
        pushes = [(name, _score_push(z, p)) for name, p in explained]
        if adapter is not None:
            pushes.append(("this gateway's labels", score - base))
        top = sorted((p for p in pushes if abs(p[1]) >= 0.005), key=lambda p: -abs(p[1]))[:TOP_SIGNALS]
        return score, tuple(Signal(n, round(v, 3)) for n, v in top), _name_of(model)

    def base_score(self, vector: np.ndarray, text: str, turns: int) -> float:
        """The router's own score for a query (its ``vector`` already embedded), without the adapter: what an
        adapter trains on top of. The decision's own score when it scored this query (the same vector)."""
        known = self._scored.pop((text, turns), None)
        if known is not None:
            return round(known, 6)
        return round(float(self.model.score(vector[None, :], [text], [turns])[0]), 6)

    def label_inputs(self, text: str, turns: int) -> list[float] | None:
        """What a label keeps of the query beyond its vector, for a router that reads more (an outcomes head's
        shape features: length, code, math, ...): numbers, never the text. None for a router that reads the
        vector alone."""
        model = self.model
        extra = model.inputs(np.zeros((1, model.dim), dtype=np.float32), [text], [turns])[0, model.dim :]
        return [round(float(v), 6) for v in extra] if extra.size else None


class ClassifierScorer(LiveScorer):
    """The classifier in use, replaced whole while the gateway runs (a reload, an adapter, a learnt ability).

    Each read goes to the current :class:`Classifier` once; each write (``model = ...``, ``adapter = ...``)
    puts a new classifier in the slot with one assignment. Writes come from the event loop only."""

    def __init__(self, model: RouterModel, embedder: Embedder, adapter: Adapter | None = None) -> None:
        self.slot = SnapshotSlot(RoutingSnapshot(Classifier(model, embedder, adapter)))

    @property
    def current(self) -> Classifier:
        scorer = self.slot.snapshot.scorer
        assert isinstance(scorer, Classifier)
        return scorer

    def swap(self, **changes: Any) -> Classifier:
        """Put a copy of the current classifier changed by ``changes`` in use (one assignment); returns it."""
        new = replace(self.current, **changes)
        self.slot.swap(scorer=new)
        return new

    @property
    def model(self) -> RouterModel:
        return self.current.model

    @model.setter
    def model(self, model: RouterModel) -> None:
        self.swap(model=model)

    @property
    def adapter(self) -> Adapter | None:
        return self.current.adapter

    @adapter.setter
    def adapter(self, adapter: Adapter | None) -> None:
        self.swap(adapter=adapter)

    @property
    def embedder(self) -> Embedder:
        return self.current.embedder

    @property
    def name(self) -> str:
        return self.current.name

    @property
    def version(self) -> str:
        return self.current.version

    def score(self, query: RouteQuery) -> float:
        return self.current.score(query)

    def score_explained(self, query: RouteQuery) -> tuple[float, tuple[Signal, ...]]:
        return self.current.score_explained(query)

    def score_named(self, query: RouteQuery) -> tuple[float, tuple[Signal, ...], str]:
        return self.current.score_named(query)

    def base_score(self, vector: np.ndarray, text: str, turns: int) -> float:
        return self.current.base_score(vector, text, turns)

    def label_inputs(self, text: str, turns: int) -> list[float] | None:
        return self.current.label_inputs(text, turns)


def _name_of(model: RouterModel) -> str:
    describe = getattr(model.head, "describe_pair", None)
    return model.name if describe is None else f"{model.name} ({describe()})"
