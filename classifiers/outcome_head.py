"""The outcome model as a router head: the expected gain of the configured cloud model over the local one.

The head carries the :class:`~hybridgate.classifiers.outcomes.OutcomeModel`
(query side and the catalogue of every logged model's ability, numbers and
names only) and the pair it scores for. A gateway names its pair by catalogue
name (``router.local_model``, ``router.cloud_model``); an unknown or unnamed
model gets the prior ability (:mod:`.pair_score`), so with neither known this
is the catalogue-free router. The score is ``(gain + 1) / 2``: 0.5 where the two
models are expected to do equally well.

It is not fitted from one pair's gains (:func:`fit` refuses): it is built from
many models' outcomes by :func:`build_outcome_head` (``hybridgate router train-across``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from hybridgate.classifiers.heads import HeadError, TrainingSet
from hybridgate.classifiers.numeric import need
from hybridgate.classifiers.outcomes import OutcomeModel
from hybridgate.classifiers.pair_score import Ability, ability_for, success
from hybridgate.classifiers.shape import NAMES as SHAPE_NAMES

_ARRAYS = ("x_mean", "x_scale", "w", "theta", "v", "gamma")


@dataclass
class OutcomeHead:
    kind: ClassVar[str] = "outcomes"
    needs_shape: ClassVar[bool] = True
    local_model: str = ""
    cloud_model: str = ""
    model: OutcomeModel = field(default_factory=OutcomeModel)
    saved: dict[str, Any] = field(default_factory=dict)
    learnt_local: Ability | None = None  # the local model's ability learnt from this gateway's labels
    _pair: tuple[Ability, Ability] | None = None

    def fit(self, data: TrainingSet) -> None:
        raise HeadError("the outcomes head learns from many models' outcomes at once: build it with `hybridgate router train-across`")

    def load_params(self, params: Mapping[str, Any]) -> None:
        self.saved = dict(params.get("outcome_model") or {})

    def with_pair(self, local: str | None, cloud: str | None) -> OutcomeHead:
        """This head scoring for another pair (catalogue names or aliases; None or unknown: the prior ability)."""
        head = OutcomeHead(local or "", cloud or "", self.model, self.saved)
        return head

    def with_local(self, ability: Ability | None) -> OutcomeHead:
        """A new head scoring with the local model's ``ability`` (None: back to the catalogue's or the prior),
        complete before anyone sees it: a gateway swaps it in whole, never changes the head in use."""
        head = OutcomeHead(self.local_model, self.cloud_model, self.model, self.saved, ability)
        head.pair()
        return head

    def prior_local(self) -> Ability:
        """The local model's ability before any of this gateway's labels: the catalogue's, or the prior."""
        return ability_for(self.model, self.local_model or None, cloud=False)

    def pair(self) -> tuple[Ability, Ability]:
        if self._pair is None:
            self._pair = (
                self.learnt_local or self.prior_local(),
                ability_for(self.model, self.cloud_model or None, cloud=True),
            )
        return self._pair

    def gain(self, x: np.ndarray) -> np.ndarray:
        local, cloud = self.pair()
        u = self.model.latent(np.asarray(x, dtype=np.float64))
        return success(u, cloud) - success(u, local)

    def local_failure(self, x: np.ndarray) -> np.ndarray:
        return 1.0 - success(self.model.latent(np.asarray(x, dtype=np.float64)), self.pair()[0])

    def score(self, x: np.ndarray) -> np.ndarray:
        return np.clip((self.gain(x) + 1.0) / 2.0, 0.0, 1.0)

    def explained(self, x: np.ndarray) -> tuple[np.ndarray, list[tuple[str, float]]]:
        """The score and what moved the gain's direction: the query's topic (its vector) and each shape feature,
        as their share of ``u . (v_cloud - v_local)`` (the abilities used are named by :meth:`describe_pair`)."""
        local, cloud = self.pair()
        x1 = np.asarray(x[:1], dtype=np.float64)
        z = (x1[0] - self.model.x_mean) / self.model.x_scale
        direction = self.model.w @ (cloud.loadings - local.loadings)
        parts = z * direction
        n_shape = len(SHAPE_NAMES)
        pushes = [("topic", float(parts[:-n_shape].sum()))]
        pushes += [(name, float(p)) for name, p in zip(SHAPE_NAMES, parts[-n_shape:], strict=True)]
        pushes = sorted((p for p in pushes if abs(p[1]) >= 1e-4), key=lambda p: -abs(p[1]))
        return self.score(x1), pushes

    def abilities(self) -> dict[str, Any]:
        local, cloud = self.pair()
        return {
            "local": {"name": local.name, "origin": local.origin, "labels": local.labels, "offset": round(local.offset, 4)},
            "cloud": {"name": cloud.name, "origin": cloud.origin, "labels": cloud.labels, "offset": round(cloud.offset, 4)},
        }

    def describe_pair(self) -> str:
        local, cloud = self.pair()
        return f"local {local.name}: {local.source()} {local.offset:+.2f}, cloud {cloud.name}: {cloud.source()} {cloud.offset:+.2f}"

    def params(self) -> dict[str, Any]:
        return {"local_model": self.local_model, "cloud_model": self.cloud_model, "outcome_model": self.model.params(),
                "catalogue": catalogue(self.model), "shape_features": list(SHAPE_NAMES)}

    def arrays(self) -> dict[str, np.ndarray]:
        return self.model.arrays()

    def load_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        if not self.saved:
            raise HeadError("the outcomes head's header lacks its outcome_model settings")
        got = dict(zip(_ARRAYS, need(arrays, *_ARRAYS), strict=True))
        try:
            self.model = OutcomeModel.from_saved(self.saved, got)
        except (KeyError, ValueError, TypeError) as e:
            raise HeadError(f"the outcomes head's arrays do not match its header: {e}") from e
        self._pair = None


@runtime_checkable
class LearnsLocal(Protocol):
    """A head that scores the deployed pair with an outcome model's abilities and takes its local model's ability
    from elsewhere: learnt from a gateway's own labels (``serving/router_adapt.py``) or a fleet's
    (``federated/deploy.py``). The outcomes head and the pair-blend head are such heads, and so is any head that
    carries one: what the gateway needs of it is this, not which head it is.

    The labels are fitted on the outcome model's query parts (``model.latent`` of the inputs the router reads),
    from ``prior_local`` as the prior; the result goes in as a new head built whole (``with_local``), never by
    changing the head in use."""

    @property
    def model(self) -> OutcomeModel:
        """The outcome model whose query parts the local ability's loadings act on."""
        ...

    @property
    def learnt_local(self) -> Ability | None:
        """The local ability in use when it was learnt here (None: the catalogue's or the prior)."""
        ...

    def prior_local(self) -> Ability:
        """The local model's ability before any label: the catalogue's (origin "catalogue"), or the prior."""
        ...

    def with_local(self, ability: Ability | None) -> LearnsLocal:
        """This head scoring with the local model's ``ability`` (None: back to ``prior_local``)."""
        ...

    def with_pair(self, local: str | None, cloud: str | None) -> LearnsLocal:
        """This head scoring for another pair (catalogue names; None or unknown: the prior ability)."""
        ...

    def pair(self) -> tuple[Ability, Ability]:
        """The (local, cloud) abilities it scores with."""
        ...


def catalogue(om: OutcomeModel) -> dict[str, Any]:
    """Every model the head knows, its ability on the served scale, and the aliases it answers to."""
    from hybridgate.classifiers.outcomes import ALIASES

    return {
        "models": {m: round(float(t) + om.source_offset(None), 4) for m, t in zip(om.models, om.theta, strict=True)},
        "aliases": {a: t for a, t in ALIASES.items() if t in om.models and a != t},
    }


def for_pair(model: Any, local: str | None, cloud: str | None) -> Any:
    """A loaded router scoring for the configured pair when its head scores a pair (an outcomes head, or a
    head that carries one, such as the pair-blend head); others are unchanged."""
    with_pair = getattr(model.head, "with_pair", None)
    if with_pair is not None:
        model.head = with_pair(local, cloud)
    return model
