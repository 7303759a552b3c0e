"""What the policy and the gateway may ask of a scorer, written down as protocols.

Every scorer gives a name and a score. A scorer may also say what moved its
score (:class:`ExplainingScorer`), which router gave it (:class:`NamingScorer`),
which version of it scored (:class:`VersionedScorer`), and what a label keeps
of the query (:class:`EmbeddingScorer`); :func:`scored` and
:func:`version_of` ask each scorer for as much as it declares, so neither the
policy nor the gateway probes a scorer's attributes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple, Protocol, runtime_checkable

from hybridgate.router.decision import RouteQuery, Signal

if TYPE_CHECKING:
    import numpy as np

    from hybridgate.classifiers.embedder import Embedder


@runtime_checkable
class Scorer(Protocol):
    """Anything that says how much a query needs the cloud, from 0 (local is enough) to 1."""

    @property
    def name(self) -> str: ...

    def score(self, query: RouteQuery) -> float: ...


@runtime_checkable
class ExplainingScorer(Scorer, Protocol):
    """A scorer that says which signals moved its score most, each as its push on the score."""

    def score_explained(self, query: RouteQuery) -> tuple[float, tuple[Signal, ...]]: ...


@runtime_checkable
class NamingScorer(ExplainingScorer, Protocol):
    """A scorer whose router name depends on what scored the query (a router that scores a pair names it)."""

    def score_named(self, query: RouteQuery) -> tuple[float, tuple[Signal, ...], str]: ...


@runtime_checkable
class VersionedScorer(Scorer, Protocol):
    """A scorer built from a versioned artifact (a trained router), which a decision reports."""

    @property
    def version(self) -> str | None: ...


@runtime_checkable
class EmbeddingScorer(VersionedScorer, Protocol):
    """A scorer that embeds the query: what the gateway may ask of it beyond the score. The condense mode ranks
    passages with its embedder, and a label keeps the query's vector, the router's own score then (what a
    correction trains on) and the numbers beyond the vector it reads, never the text."""

    @property
    def embedder(self) -> Embedder: ...

    def base_score(self, vector: np.ndarray, text: str, turns: int) -> float: ...

    def label_inputs(self, text: str, turns: int) -> list[float] | None: ...


class Scored(NamedTuple):
    score: float
    signals: tuple[Signal, ...]
    name: str | None  # the router that gave it, where the scorer names it per query


def scoring(scorer: Scorer) -> Callable[[RouteQuery], Scored]:
    """How to score a query with ``scorer``, with as much explanation as it declares it can give. Asked once per
    scorer (a routing snapshot keeps the answer): checking a protocol costs more than a decision may."""
    if isinstance(scorer, NamingScorer):
        named = scorer.score_named
        return lambda query: Scored(*named(query))
    if isinstance(scorer, ExplainingScorer):
        explained = scorer.score_explained
        return lambda query: Scored(*explained(query), None)
    return lambda query: Scored(scorer.score(query), (), None)


def version_of(scorer: Scorer) -> str | None:
    return scorer.version if isinstance(scorer, VersionedScorer) else None
