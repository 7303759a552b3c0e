"""The shipped router, adjusted to this gateway's traffic by its own labels, in the background.

Labels (feedback, cascade outcomes, shadow comparisons) carry the query's vector
and the router's own score then, never the text. Every ``interval_s`` this task
fits an :class:`~hybridgate.classifiers.adapt.Adapter` on the labels made under
the router now in use, holds out a quarter of them (by a hash of the label, so
the split is stable), and swaps the adapter in only when it ranks the held-out
labels better than the router alone (ROC AUC). A new router version starts with
no adapter: its labels come with it.

A router that scores the deployed pair (a head that is
:class:`~hybridgate.classifiers.outcome_head.LearnsLocal`: the outcomes head of
``across-static``, the pair-blend head of ``pair-blend-static``, or one that carries
either; the default ``pair-blend-mmlu-static`` too) whose local model is not in its catalogue (the default
SmolLM2 is not) is adapted one more way first: the local model's ability is fitted on the labels that say how the
local model did (shadow comparisons, cascades, ratings of local answers), from
the query inputs each label keeps (vector and shape features, never the text),
by :func:`~hybridgate.classifiers.pair_score.fit_ability` with the prior as its
prior. It is used once it predicts the held-out labels' local outcomes better
than the prior (log-loss); a new head with it is built whole and swapped in with
one assignment of the scorer's model, so a decision sees one ability or the other. The same assignment drops
the score's correction, which was fitted on the old head's scores; the correction is then refitted on the new
head's scores of the same labels (from the inputs each label keeps), and adopted again only if it helps.

A fleet running the same local model fits that ability together from all its
gateways' labels (``federated/ability_share.py``) and publishes it with the
router (``local_ability`` in its header). The gateway judges it like its own, on
its held-out quarter of labels, which it never sent to the fleet: it is used
only when it predicts them better than the prior and than this gateway's own fit.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hybridgate.classifiers.adapt import Adapter, fit_adapter
from hybridgate.classifiers.local_labels import SD_UNKNOWN, held_out, local_outcomes, log_loss
from hybridgate.classifiers.model import RouterModel
from hybridgate.classifiers.outcome_head import LearnsLocal
from hybridgate.classifiers.pair_score import Ability, fit_ability, success
from hybridgate.router.classifier_scorer import ClassifierScorer
from hybridgate.router.scorer import EmbeddingScorer, Scorer
from hybridgate.serving.periodic import Periodic
from hybridgate.serving.router_reload import auc, label_arrays, labels_under
from hybridgate.serving.state import StateStore

log = logging.getLogger(__name__)
# The fleet's ability is judged on at least this many of this gateway's held-out local outcomes (its own needs
# ``min_labels`` to be fitted; judging one that the fleet fitted needs fewer).
MIN_JUDGE = 8
_held_out = held_out  # the split the tests and the fleet's client share


def label_inputs(scorer: Scorer, text: str, turns: int) -> list[float] | None:
    """What a label keeps of the query beyond its vector, for a router that reads more (an outcomes or pair-blend
    head's shape features: length, code, math, ...; the inputs the local ability is fitted on): numbers, never the text. None for a router that reads the vector alone,
    or a scorer that embeds nothing."""
    return scorer.label_inputs(text, turns) if isinstance(scorer, EmbeddingScorer) else None


def learns_local_ability(model: RouterModel) -> bool:
    """A router that scores the pair and whose local model is not in its catalogue: its ability is learnt here."""
    return isinstance(model.head, LearnsLocal) and model.head.prior_local().origin != "catalogue"


@dataclass
class AdaptResult:
    outcome: str  # "adopted", "kept", "too-few"
    labels: int
    auc_router: float | None = None
    auc_adapted: float | None = None
    ability: dict[str, Any] | None = None  # for a learnt ability: the one in use, and the held-out log-losses
    correction: AdaptResult | None = None  # beside a learnt ability's result: the score correction's

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"outcome": self.outcome, "labels": self.labels, "auc_router": self.auc_router,
                               "auc_adapted": self.auc_adapted}
        if self.ability is not None:
            out["ability"] = self.ability
        if self.correction is not None:
            out["correction"] = self.correction.as_dict()
        return out


@dataclass
class RouterAdapter:
    scorer: ClassifierScorer
    state: StateStore
    interval_s: float
    min_labels: int = 40
    last: AdaptResult | None = None  # the last adaptation's result (what the operator's view shows)
    last_ability: AdaptResult | None = None
    last_correction: AdaptResult | None = None
    fleet: Ability | None = None  # the local ability a federation published with the router in use, to be judged
    fleet_gateways: int = 0
    _fitted_on: int = -1  # labels the local ability was last judged on
    _corrected_on: int = -1  # labels the correction was last judged on
    _loop: Periodic | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._loop = Periodic("hybridgate-router-adapt", self.adapt_once, self.interval_s)

    async def usable_labels(self) -> list[dict[str, Any]]:
        return labels_under(await self.state.labels(10_000), self.scorer.version, self.scorer.model.dim)

    async def adapt_once(self) -> AdaptResult:
        """One adaptation. A router that learns the local model's ability learns it first, then its score is corrected
        like any router's: the correction is fitted on the scores of the head it will correct. Returns the ability's
        result with the correction's in ``correction``, or the correction's alone."""
        ability = await self._adapt_ability() if learns_local_ability(self.scorer.model) else None
        correction = await self.correct_once()
        self.last = correction if ability is None else dataclasses.replace(ability, correction=correction)
        return self.last

    async def correct_once(self) -> AdaptResult:
        """Fit the score's correction on the labels made under this router version; adopt it if it ranks the held-out
        quarter better."""
        rows = await self.usable_labels()
        if len(rows) < self.min_labels:
            self.last_correction = AdaptResult("too-few", len(rows))
            return self.last_correction
        if len(rows) == self._corrected_on and self.last_correction is not None:
            return self.last_correction
        model = self.scorer.model
        result, adapter = await asyncio.to_thread(self._fit, rows, model)
        self._corrected_on = len(rows)
        self.last_correction = result
        # Back on the event loop, where a reload also happens: an adapter fitted on the scores of a model the watcher
        # (or a learnt ability) replaced meanwhile does not apply to the new one.
        if adapter is not None and self.scorer.model is model:
            self.scorer.adapter = adapter  # the one swap
        return result

    def _fit(self, rows: list[dict[str, Any]], model: RouterModel) -> tuple[AdaptResult, Adapter | None]:
        held = np.array([_held_out(r) for r in rows])
        base, x, y = label_arrays(rows)
        base = self._rescored(model, rows, base)
        if held.all() or not held.any():
            return AdaptResult("too-few", len(rows)), None
        trial = fit_adapter(base[~held], x[~held], y[~held])
        before, after = auc(base[held], y[held]), auc(trial.apply(base[held], x[held]), y[held])
        if before is None or after is None or after <= before:
            log.info("adapter not adopted: held-out AUC %s with it, %s without (%d labels)", after, before, len(rows))
            return AdaptResult("kept", len(rows), before, after), None
        adapter: Adapter = fit_adapter(base, x, y)  # validated: now fit on every label
        log.info("adapter adopted on %d labels: held-out AUC %.3f -> %.3f", len(rows), before, after)
        return AdaptResult("adopted", len(rows), round(before, 4), round(after, 4)), adapter

    def _rescored(self, model: RouterModel, rows: list[dict[str, Any]], base: np.ndarray) -> np.ndarray:
        """The scores the head in use gives the labels' queries, where a learnt local ability may have changed them
        since the label was made (same router version, another ability): from the inputs each label keeps. A label
        without them keeps the score it was made with."""
        if not isinstance(model.head, LearnsLocal):
            return base
        extra = len(label_inputs(self.scorer, "", 1) or [])
        keep = np.array([isinstance(r.get("inputs"), list) and len(r["inputs"]) == extra for r in rows], dtype=bool)
        if not keep.any():
            return base
        x = np.asarray([r["vector"] + r["inputs"] for r, k in zip(rows, keep, strict=True) if k], dtype=np.float32)
        out = base.astype(np.float64, copy=True)
        out[keep] = model.score_inputs(x.reshape(int(keep.sum()), model.dim + extra))
        return out

    def offer_fleet(self, published: Any) -> Ability | None:
        """The local ability a federation published with the router (``local_ability`` in its header): kept to be
        judged at the next adaptation when it is this gateway's local model and fits this router's query parts;
        returns it, or None (and why, logged)."""
        self.fleet = None
        model = self.scorer.model
        if not published or not learns_local_ability(model):
            return None
        head = model.head
        assert isinstance(head, LearnsLocal)
        prior = head.prior_local()
        try:
            name, offset = str(published["name"]), float(published["offset"])
            loadings = np.asarray(published["loadings"], dtype=np.float64)
            labels, gateways = int(published["labels"]), int(published.get("gateways", 0))
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("the router's fleet ability is not usable (%s); keeping this gateway's", exc)
            return None
        if name != prior.name or loadings.shape != prior.loadings.shape or not np.isfinite([offset, *loadings]).all():
            log.warning("the router's fleet ability (%s, %d loadings) is not for this gateway's local model %s (%d); not offered",
                        name, loadings.size, prior.name, prior.loadings.size)
            return None
        self.fleet = Ability(name, offset, loadings, "labels", labels)
        self.fleet_gateways = gateways
        self._fitted_on = -1  # judged at the next adaptation, whatever the labels
        return self.fleet

    async def _adapt_ability(self) -> AdaptResult:
        """Learn the unknown local model's ability, or take the fleet's; swap a scorer with it in once it beats the prior."""
        model = self.scorer.model
        extra = len(label_inputs(self.scorer, "", 1) or [])
        x, y, held = local_outcomes(await self.state.labels(10_000), self.scorer.embedder.name, model.dim, extra)
        own = len(y) >= self.min_labels and held.any() and not held.all()
        fleet = self.fleet if int(held.sum()) >= MIN_JUDGE else None
        if not own and fleet is None:
            self.last_ability = AdaptResult("too-few", len(y))
            return self.last_ability
        if len(y) == self._fitted_on and self.last_ability is not None:
            return self.last_ability
        result, ability = await asyncio.to_thread(self._fit_ability, model, x, y, held, own, fleet)
        self._fitted_on = len(y)
        self.last_ability = result
        # Back on the event loop, where a reload also happens: a model the watcher replaced meanwhile is left alone.
        if self.scorer.model is model:
            head = model.head
            assert isinstance(head, LearnsLocal)
            if ability is not None or head.learnt_local is not None:
                # The one swap: the new head, without the correction fitted on the old head's scores (refitted next).
                self.scorer.swap(model=dataclasses.replace(model, head=head.with_local(ability)), adapter=None)
                self._corrected_on = -1
        return result

    def _fit_ability(
        self, model: RouterModel, x: np.ndarray, y: np.ndarray, held: np.ndarray, own: bool, fleet: Ability | None
    ) -> tuple[AdaptResult, Ability | None]:
        """Each candidate (the prior; this gateway's fit on its other labels; the fleet's, fitted on none of these)
        scored by its log-loss on the held-out local outcomes: one is used only if it beats the prior, and the fleet's
        only if it also beats this gateway's own."""
        head = model.head
        assert isinstance(head, LearnsLocal)
        prior = head.prior_local()
        u = head.model.latent(x)
        before = log_loss(success(u[held], prior), y[held])
        info: dict[str, Any] = {"name": prior.name, "loss_prior": round(before, 4)}
        best, best_loss, chosen = "prior", before, None
        if own:
            trial = fit_ability(u[~held], y[~held], prior, *SD_UNKNOWN)
            after = log_loss(success(u[held], trial), y[held])
            info["loss_learnt"] = round(after, 4)
            if after < best_loss:
                best, best_loss = "own", after
        if fleet is not None:
            loss = log_loss(success(u[held], fleet), y[held])
            info["loss_fleet"] = round(loss, 4)
            if loss < best_loss:
                best, best_loss, chosen = "fleet", loss, fleet
        if best == "prior":
            log.info("local ability not learnt: held-out log-loss %s against the prior's %.4f (%d labels)", info, before, len(y))
            return AdaptResult("kept", len(y), ability={**info, "origin": prior.origin, "offset": round(prior.offset, 4)}), None
        if best == "own":
            chosen = fit_ability(u, y, prior, *SD_UNKNOWN)  # validated: now fit on every label
            origin = chosen.source()
        else:
            assert chosen is not None
            origin = f"the fleet's {chosen.labels} labels ({self.fleet_gateways} gateways)"
        log.info("local ability of %s: %s, %+.2f (prior %+.2f); held-out log-loss %.4f -> %.4f",
                 prior.name, origin, chosen.offset, prior.offset, before, best_loss)
        return AdaptResult("adopted", len(y), ability={**info, "origin": origin, "offset": round(chosen.offset, 4)}), chosen

    def reset(self) -> None:
        """A new router version: its scores differ, so the old adapter and its labels no longer apply (the watcher
        put the new version in use without it; a caller without one drops it here)."""
        if self.scorer.adapter is not None:
            self.scorer.adapter = None
        self._fitted_on = self._corrected_on = -1
        self.last = self.last_ability = self.last_correction = None
        self.fleet = None

    def start(self) -> None:
        assert self._loop is not None
        self._loop.start()

    async def aclose(self) -> None:
        assert self._loop is not None
        await self._loop.aclose()
