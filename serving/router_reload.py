"""A new router version, picked up while the gateway runs, and kept only if it does no worse here.

The watcher polls the router folder's header. A new version is loaded and
verified (hash, embedder), then compared with the one in use on this device's
own labels (ROC AUC of "the cloud was needed"): it replaces the current one
unless it is worse by more than ``tolerance``; the previous one is kept, so a
version that turns out worse can be rolled back. The fleet's correction of the
router in use is judged exactly, from the score each labelled query got then;
another router only when neither reads the query's text (labels keep none).
With too few labels to judge, the new version is taken (the server validated it
on its side).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from hybridgate.classifiers.artifact import ArtifactError, load_router
from hybridgate.classifiers.model import RouterModel
from hybridgate.classifiers.numeric import auc  # public here too: router_adapt and the tests import it from this module
from hybridgate.classifiers.outcome_head import for_pair
from hybridgate.router import RoutingPolicy
from hybridgate.router.classifier_scorer import ClassifierScorer
from hybridgate.serving.config import RouterConfig
from hybridgate.serving.periodic import Periodic
from hybridgate.serving.state import StateStore

log = logging.getLogger(__name__)
MIN_LABELS = 20


def thresholds_for(model: RouterModel, cfg: RouterConfig) -> tuple[float, float | None]:
    """(t_cloud, t_local) for ``model`` under ``cfg``: fixed values win, else the model's calibration
    for ``cloud_share`` (or its default share), and ``gray_share`` below that."""
    if cfg.threshold is not None:
        threshold = cfg.threshold
    elif cfg.cloud_share is not None:
        threshold = model.threshold_for(cfg.cloud_share)
    else:
        threshold = model.default_threshold()
    t_local = cfg.t_local
    if t_local is None and cfg.gray_share:
        t_local = model.threshold_for(min(1.0, model.share_above(threshold) + cfg.gray_share))
    return round(threshold, 6), None if t_local is None else round(min(t_local, threshold), 6)


def labels_under(rows: list[dict[str, Any]], version: str, dim: int) -> list[dict[str, Any]]:
    """The labels made under router ``version`` that kept its score: what a correction of that router is trained
    and judged on."""
    return [
        r for r in rows
        if r.get("router_version") == version and isinstance(r.get("base_score"), (int, float))
        and isinstance(r.get("vector"), list) and len(r["vector"]) == dim and r.get("label") in (0, 1)
    ]


def label_arrays(rows: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(the router's scores then, query vectors, labels) of labels from :func:`labels_under`."""
    base = np.asarray([float(r["base_score"]) for r in rows])
    return base, np.asarray([r["vector"] for r in rows], dtype=np.float32), np.asarray([int(r["label"]) for r in rows])


@dataclass
class RouterWatcher:
    folder: Path
    policy: RoutingPolicy
    state: StateStore
    interval_s: float
    tolerance: float = 0.01
    on_loaded: Callable[[RouterModel], None] | None = None
    # A new router's thresholds (t_cloud, t_local), put in use with it; None keeps the thresholds in use.
    thresholds: Callable[[RouterModel], tuple[float, float | None]] | None = None
    previous: RouterModel | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    _loop: Periodic | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._loop = Periodic("hybridgate-router-watch", self.check_once, self.interval_s)

    @property
    def scorer(self) -> ClassifierScorer:
        assert isinstance(self.policy.scorer, ClassifierScorer)
        return self.policy.scorer

    def _header_version(self) -> str | None:
        try:
            return str(json.loads((self.folder / "router.json").read_text(encoding="utf-8")).get("version"))
        except (OSError, ValueError):
            return None

    async def check_once(self) -> str | None:
        """Load a new version if there is one; returns what happened ("loaded", "kept", "invalid") or None."""
        version = self._header_version()
        if version is None or version == self.scorer.version:
            return None
        emb = self.scorer.embedder
        try:
            new = load_router(self.folder, embedder=emb.name, dim=emb.dim)
            old = self.scorer.model.head  # a router that scores a pair keeps the configured pair across reloads
            new = for_pair(new, getattr(old, "local_model", None), getattr(old, "cloud_model", None))
        except ArtifactError as exc:
            log.warning("router %s not loaded: %s", version, exc)
            self.history.append({"version": version, "outcome": "invalid", "reason": str(exc)})
            return "invalid"
        old_auc, new_auc, n = await self._compare(self.scorer.model, new)
        if old_auc is not None and new_auc is not None and new_auc < old_auc - self.tolerance:
            log.warning("router %s scores AUC %.3f on %d local labels, below %.3f of %s; keeping the current one", version, new_auc, n, old_auc, self.scorer.version)
            self.history.append({"version": version, "outcome": "kept", "auc_new": new_auc, "auc_current": old_auc, "labels": n})
            return "kept"
        self.previous = self.scorer.model
        self._use(new)
        log.info("router %s loaded (was %s)", new.version, self.previous.version)
        self.history.append({"version": new.version, "outcome": "loaded", "auc_new": new_auc, "auc_current": old_auc, "labels": n})
        return "loaded"

    def rollback(self) -> bool:
        if self.previous is None:
            return False
        back, self.previous = self.previous, self.scorer.model
        self._use(back)
        return True

    def _use(self, model: RouterModel) -> None:
        """Put ``model`` in use with its own thresholds and without the old router's adapter (fitted on the old
        scores, it no longer applies): one new routing snapshot, one assignment, so no decision mixes them."""
        changes: dict[str, Any] = {"scorer": replace(self.scorer.current, model=model, adapter=None)}
        if self.thresholds is not None:
            changes["threshold"], changes["t_local"] = self.thresholds(model)
        self.policy.swap(**changes)
        if self.on_loaded is not None:
            self.on_loaded(model)

    async def _compare(self, old: RouterModel, new: RouterModel) -> tuple[float | None, float | None, int]:
        """Both routers' ROC AUC on this device's labels, or None where they cannot be judged fairly here."""
        rows = [
            r for r in await self.state.labels(10_000)
            if r.get("embedder") == self.scorer.embedder.name and r.get("label") in (0, 1)
            and isinstance(r.get("vector"), list) and len(r["vector"]) == old.dim
        ]
        if new.fleet_step is not None and new.trained_on == old.version:
            # The fleet's correction of the router in use: exact on the labels made under it, from the score each
            # query got then (the text, which the router reads and a label does not keep, is in that score).
            rows = labels_under(rows, old.version, old.dim)
            if len(rows) < MIN_LABELS:
                return None, None, len(rows)
            base, x, y = label_arrays(rows)
            return auc(base, y), auc(new.fleet_step.apply(base, x), y), len(rows)
        if old.reads_text or new.reads_text or len(rows) < MIN_LABELS:
            return None, None, len(rows)  # labels keep no text: a router that reads it cannot be scored on them
        x = np.asarray([r["vector"] for r in rows], dtype=np.float32)
        y = np.asarray([int(r["label"]) for r in rows])
        texts = [""] * len(rows)
        return auc(old.score(x, texts), y), auc(new.score(x, texts), y), len(rows)

    def start(self) -> None:
        assert self._loop is not None
        self._loop.start()

    async def aclose(self) -> None:
        assert self._loop is not None
        await self._loop.aclose()
