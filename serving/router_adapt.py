"""The shipped router, adjusted to this gateway's traffic by its own labels, in the background.

Labels (feedback, cascade outcomes, shadow comparisons) carry the query's vector
and the router's own score then, never the text. Every ``interval_s`` this task
fits an :class:`~hybridgate.classifiers.adapt.Adapter` on the labels made under
the router now in use, holds out a quarter of them (by a hash of the label, so
the split is stable), and swaps the adapter in only when it ranks the held-out
labels better than the router alone (ROC AUC). A new router version starts with
no adapter: its labels come with it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hybridgate.classifiers.adapt import Adapter, fit_adapter
from hybridgate.router.classifier_scorer import ClassifierScorer
from hybridgate.serving.periodic import Periodic
from hybridgate.serving.router_reload import auc, label_arrays, labels_under
from hybridgate.serving.state import StateStore

log = logging.getLogger(__name__)
HOLDOUT = 0.25


def _held_out(row: dict[str, Any]) -> bool:
    key = f"{row.get('ts')}:{row.get('base_score')}:{row.get('label')}"
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 2**32 < HOLDOUT


@dataclass
class AdaptResult:
    outcome: str  # "adopted", "kept", "too-few"
    labels: int
    auc_router: float | None = None
    auc_adapted: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "labels": self.labels, "auc_router": self.auc_router, "auc_adapted": self.auc_adapted}


@dataclass
class RouterAdapter:
    scorer: ClassifierScorer
    state: StateStore
    interval_s: float
    min_labels: int = 40
    last: AdaptResult | None = None
    _fitted_on: int = -1
    _loop: Periodic | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._loop = Periodic("hybridgate-router-adapt", self.adapt_once, self.interval_s)

    async def usable_labels(self) -> list[dict[str, Any]]:
        return labels_under(await self.state.labels(10_000), self.scorer.version, self.scorer.model.dim)

    async def adapt_once(self) -> AdaptResult:
        rows = await self.usable_labels()
        if len(rows) < self.min_labels:
            self.last = AdaptResult("too-few", len(rows))
            return self.last
        if len(rows) == self._fitted_on and self.last is not None:
            return self.last
        result = await asyncio.to_thread(self._fit, rows)
        self._fitted_on = len(rows)
        self.last = result
        return result

    def _fit(self, rows: list[dict[str, Any]]) -> AdaptResult:
        held = np.array([_held_out(r) for r in rows])
        base, x, y = label_arrays(rows)
        if held.all() or not held.any():
            return AdaptResult("too-few", len(rows))
        trial = fit_adapter(base[~held], x[~held], y[~held])
        before, after = auc(base[held], y[held]), auc(trial.apply(base[held], x[held]), y[held])
        if before is None or after is None or after <= before:
            log.info("adapter not adopted: held-out AUC %s with it, %s without (%d labels)", after, before, len(rows))
            return AdaptResult("kept", len(rows), before, after)
        adapter: Adapter = fit_adapter(base, x, y)  # validated: now fit on every label
        self.scorer.adapter = adapter
        log.info("adapter adopted on %d labels: held-out AUC %.3f -> %.3f", len(rows), before, after)
        return AdaptResult("adopted", len(rows), round(before, 4), round(after, 4))

    def reset(self) -> None:
        """A new router version: its scores differ, so the old adapter and its labels no longer apply."""
        self.scorer.adapter = None
        self._fitted_on = -1
        self.last = None

    def start(self) -> None:
        assert self._loop is not None
        self._loop.start()

    async def aclose(self) -> None:
        assert self._loop is not None
        await self._loop.aclose()
