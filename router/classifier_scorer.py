"""The trained embedding classifier behind the :class:`~hybridgate.router.Scorer` seam.

Embedding a query is computation, not I/O: the model and the router's arrays
are loaded by the gateway before the first request, so the policy stays pure.
"""

from __future__ import annotations

from dataclasses import dataclass

from hybridgate.classifiers.embedder import Embedder
from hybridgate.classifiers.model import RouterModel
from hybridgate.router.decision import RouteQuery


@dataclass
class ClassifierScorer:
    model: RouterModel
    embedder: Embedder

    def __post_init__(self) -> None:
        if self.embedder.name != self.model.embedder or self.embedder.dim != self.model.dim:
            raise ValueError(
                f"router {self.model.name} was trained on {self.model.embedder} ({self.model.dim} dimensions), "
                f"not {self.embedder.name} ({self.embedder.dim})"
            )

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def version(self) -> str:
        return self.model.version

    def score(self, query: RouteQuery) -> float:
        vectors = self.embedder.encode([query.text])
        return float(self.model.score(vectors, [query.text])[0])
