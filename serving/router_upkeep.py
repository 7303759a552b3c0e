"""The router while the gateway runs: new versions picked up, corrections learnt, thresholds kept on target.

Three background jobs change what the router decides with: the watcher
(:mod:`hybridgate.serving.router_reload`) loads a new version, the adapter
(:mod:`hybridgate.serving.router_adapt`) learns a correction from this gateway's
labels, and recalibration moves the thresholds with the recent scores. This
module owns them, and what a reload brings besides (node weights and a local
model's ability that a federation published with the router).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np

from hybridgate.classifiers.node_weights import NodeWeights, NodeWeightsError
from hybridgate.router import RoutingPolicy
from hybridgate.router.classifier_scorer import ClassifierScorer
from hybridgate.serving.config import GatewayConfig
from hybridgate.serving.node_stats import NodeStats
from hybridgate.serving.router_adapt import RouterAdapter
from hybridgate.serving.router_reload import RouterWatcher, thresholds_for
from hybridgate.serving.state import StateStore

log = logging.getLogger(__name__)


class RouterUpkeep:
    def __init__(self, cfg: GatewayConfig, policy: RoutingPolicy, state: StateStore, nodes: NodeStats) -> None:
        self.cfg = cfg
        self.policy = policy
        self.state = state
        self.nodes = nodes
        self._scored = 0
        self._calibrating: asyncio.Task[None] | None = None
        self.watcher: RouterWatcher | None = None
        if cfg.router.watch_s > 0 and isinstance(policy.scorer, ClassifierScorer):
            from hybridgate.classifiers.artifact import resolve_router

            self.watcher = RouterWatcher(
                resolve_router(cfg.router.path), policy, state, cfg.router.watch_s,
                on_loaded=self.router_loaded, thresholds=lambda model: thresholds_for(model, cfg.router),
            )
        self.adapter: RouterAdapter | None = None
        if cfg.router.adapt_s > 0 and cfg.state.labels and isinstance(policy.scorer, ClassifierScorer):
            self.adapter = RouterAdapter(policy.scorer, state, cfg.router.adapt_s, cfg.router.adapt_min_labels)
            # The router the gateway starts with may be a fleet's, with the local ability it published.
            self.adapter.offer_fleet((getattr(policy.scorer.model, "meta", None) or {}).get("local_ability"))

    def scored(self) -> None:
        """One more decision with a score: every ``recalibrate_every`` of them, the thresholds are recomputed."""
        every = self.cfg.router.recalibrate_every
        if not every:
            return
        self._scored += 1
        if self._scored % every == 0 and (self._calibrating is None or self._calibrating.done()):
            self._calibrating = asyncio.get_running_loop().create_task(self.recalibrate())

    async def recalibrate(self) -> None:
        """Thresholds from the quantiles of recent scores: keeps the cloud share on target as traffic drifts."""
        rc = self.cfg.router
        assert rc.cloud_share is not None
        recent = await self.state.recent_decisions(rc.recalibrate_window)
        scores = [d["decided"]["score"] for d in recent if (d.get("decided") or {}).get("score") is not None]
        if len(scores) < 50:
            return
        q = np.quantile(np.asarray(scores, dtype=np.float64), [1.0 - rc.cloud_share, max(0.0, 1.0 - rc.cloud_share - rc.gray_share)])
        snap = self.policy.swap(threshold=round(float(q[0]), 6), t_local=round(float(q[1]), 6) if rc.gray_share else None)  # both at once
        log.info("recalibrated on %d recent scores: t_cloud %.4f, t_local %s", len(scores), q[0], snap.t_local)

    def router_loaded(self, model: Any) -> None:
        """A newly loaded router is in use, with its own thresholds (its score scale) and without the adapter fitted
        on the old router's scores, all put in by the watcher at once: what the adapter learnt goes, and node
        weights the router brings are offered."""
        meta = getattr(model, "meta", None) or {}
        if self.adapter is not None:
            self.adapter.reset()
            # A local ability the fleet fitted: judged on this gateway's held-out labels at the adapter's next run.
            self.adapter.offer_fleet(meta.get("local_ability"))
        self.offer_node_weights(meta.get("node_weights"))

    def offer_node_weights(self, published: Any) -> bool:
        """Node weights a federation published with the router: taken if they predict this gateway's recent answers
        at least as well as its own (or it has too few to judge), otherwise its own are kept; the log says which."""
        if not published:
            return False
        try:
            fleet = NodeWeights.from_array([published[k] for k in ("intercept_ms", "cpu", "ai", "nl")])
        except (NodeWeightsError, KeyError, TypeError, ValueError) as exc:
            log.warning("the router's node weights are not usable (%s); keeping this gateway's", exc)
            return False
        offer = self.nodes.regression.offer(fleet)
        log.info(
            "fleet node weights %s: %s (mean error on %d recent answers: fleet %s ms, own %s ms)",
            fleet.as_dict(), "taken" if offer.taken else "kept this gateway's", offer.answers,
            "-" if offer.offered_error is None else f"{offer.offered_error:.0f}", "-" if offer.own_error is None else f"{offer.own_error:.0f}",
        )
        return offer.taken

    def info(self) -> dict[str, Any]:
        snap = self.policy.snapshot  # read once: the name, version and thresholds of one snapshot
        info: dict[str, Any] = {"name": snap.scorer.name, "version": snap.version, "threshold": snap.threshold, "t_local": snap.t_local}
        if self.watcher is not None:
            info["previous"] = None if self.watcher.previous is None else self.watcher.previous.version
            info["reloads"] = self.watcher.history[-5:]
        if self.adapter is not None:
            info["adapter"] = None if self.adapter.last is None else self.adapter.last.as_dict()
            info["adapted"] = self.adapter.scorer.adapter is not None
        return info

    def start(self) -> None:
        if self.watcher is not None:
            self.watcher.start()
        if self.adapter is not None:
            self.adapter.start()

    async def aclose(self) -> None:
        if self.watcher is not None:
            await self.watcher.aclose()
        if self.adapter is not None:
            await self.adapter.aclose()
