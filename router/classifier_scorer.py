"""The trained embedding classifier behind the :class:`~hybridgate.router.Scorer` seam.

Embedding a query is computation, not I/O: the model and the router's arrays
are loaded by the gateway before the first request, so the policy stays pure.
An :class:`~hybridgate.classifiers.adapt.Adapter` learnt from this gateway's own
labels (``serving/router_adapt.py``) may sit on top of the shipped router; it is
swapped in whole, so a decision sees either the old or the new one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hybridgate.classifiers.adapt import Adapter, logit
from hybridgate.classifiers.embedder import Embedder
from hybridgate.classifiers.model import RouterModel
from hybridgate.router.decision import RouteQuery, Signal

TOP_SIGNALS = 3


def _score_push(z: float, push: float) -> float:
    """How far the score (a probability) moved because of one log-odds term."""
    return float(1 / (1 + np.exp(-z)) - 1 / (1 + np.exp(-(z - push))))


@dataclass
class ClassifierScorer:
    model: RouterModel
    embedder: Embedder
    adapter: Adapter | None = None

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
        """The score, its signals and the name of the router (with the abilities it used) that gave them.

        Model and adapter are read once: a reload or a learnt ability swapped in meanwhile (one assignment of
        ``model``) changes the next decision, never half of this one, so the name always explains the score."""
        model, adapter = self.model, self.adapter  # one consistent pair, whatever a reload does meanwhile
        vectors = self.embedder.encode([query.text])
        base, explained = model.score_explained(model.inputs(vectors, [query.text], [query.n_messages]))
        score = base if adapter is None else float(adapter.apply(np.array([base]), vectors)[0])
        z = float(logit(np.array([score]))[0])
        pushes = [(name, _score_push(z, p)) for name, p in explained]
        if adapter is not None:
            pushes.append(("this gateway's labels", score - base))
        top = sorted((p for p in pushes if abs(p[1]) >= 0.005), key=lambda p: -abs(p[1]))[:TOP_SIGNALS]
        return score, tuple(Signal(n, round(v, 3)) for n, v in top), _name_of(model)


def _name_of(model: RouterModel) -> str:
    describe = getattr(model.head, "describe_pair", None)
    return model.name if describe is None else f"{model.name} ({describe()})"
