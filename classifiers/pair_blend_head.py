"""The blend head with the deployed pair's expected gain as a fifth signal, trained on many sources at once.

The blend head's four signals (length, neighbours, topic, rules; :mod:`.blend_head`)
carry to unseen queries, but its neighbours and topic know one exam and one
pair. This head draws them from every source's train rows, with each row's
target the pair's gain *centred within its source* (so neither can score a
query by recognising which source it reads like), and adds what only a model
of many models' outcomes knows: the expected gain of the configured cloud model
over the configured local one (:mod:`.outcome_head`, abilities from the
catalogue when the pair is known, the prior abilities otherwise: the
catalogue-free router).

The gain signal is standardised over a small reference sample of the training
queries *for the pair being scored*, so a pair whose gain varies little on
these queries does not drown the other signals, and one whose gain varies a
lot does not outweigh them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from hybridgate.classifiers.blend_head import BlendHead, platt
from hybridgate.classifiers.heads import HeadError, KNNHead, TrainingSet
from hybridgate.classifiers.numeric import need
from hybridgate.classifiers.outcome_head import OutcomeHead
from hybridgate.classifiers.outcomes import OutcomeModel
from hybridgate.classifiers.pair_score import Ability
from hybridgate.classifiers.shape import NAMES as SHAPE_NAMES

REFERENCE_ROWS = 512  # training queries kept to standardise the pair's gain


@dataclass
class GradedNeighbours(KNNHead):
    """Neighbours whose remembered gain is a real number (centred, graded), not -1/0/1."""

    def fit(self, data: TrainingSet) -> None:
        self.memory = data.x.astype(np.float16)
        self.gains = np.asarray(data.gain, dtype=np.float16)


@dataclass
class PairBlendHead(BlendHead):
    """length + neighbours + topic + rules + the configured pair's gain, each in standard units."""

    kind: ClassVar[str] = "pair-blend"
    w_gain: float = 1.0
    local_model: str = ""
    cloud_model: str = ""
    outcome: OutcomeHead = field(default_factory=OutcomeHead)
    reference: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    _gain_stats: tuple[float, float] | None = None

    # -- fitting ----------------------------------------------------------------------------------------------

    def fit(self, data: TrainingSet) -> None:
        """Fit the blend part on ``data`` (gain: the pair's gain centred within source); the outcome model must
        already be set (:func:`build_pair_blend`), since it learns from many models' outcomes, not one pair's."""
        if not self.outcome.model.models:
            raise HeadError("the pair-blend head learns its pair's gain from many models' outcomes at once: build it with "
                            "classifiers/pair_blend_train.py (python bench/default_choice.py --ship NAME)")
        topic_in, shape = self.split(data.x)
        emb = self._embedding(topic_in)
        self.neighbours = GradedNeighbours(k=self.k, tau=self.tau)
        self.neighbours.fit(TrainingSet(emb, data.label, data.gain, data.groups))
        n = self.neighbours.score_left_out()
        length = shape[:, SHAPE_NAMES.index("length")]
        self.stats = np.array(
            [length.mean(), max(float(length.std()), 1e-6), n.mean(), max(float(n.std()), 1e-6)], dtype=np.float32
        )
        self.correction = self._correction()
        self.correction.fit(topic_in, emb, data)
        self.group_names = self.correction.group_names
        pick = np.random.default_rng(self.seed).permutation(len(data.x))[:REFERENCE_ROWS]
        self.reference = np.asarray(data.x[np.sort(pick)], dtype=np.float32)
        self._gain_stats = None
        self.scale = platt(self._sum(data.x, neighbours=n), data.label)

    # -- the pair ---------------------------------------------------------------------------------------------

    def with_pair(self, local: str | None, cloud: str | None) -> PairBlendHead:
        """This head scoring for another pair (catalogue names or aliases; None or unknown: the prior ability)."""
        head = PairBlendHead(**{k: getattr(self, k) for k in self._settings()})
        head.local_model, head.cloud_model = local or "", cloud or ""
        head.outcome = self.outcome.with_pair(local, cloud)
        for name in ("neighbours", "stats", "scale", "correction", "group_names", "reference"):
            setattr(head, name, getattr(self, name))
        head.gain_stats()
        return head

    def with_local(self, ability: Ability | None) -> PairBlendHead:
        """This head with the local model's ``ability`` (learnt from labels; None: the catalogue's or the prior),
        the pair's gain re-standardised over the reference queries for it."""
        head = self.with_pair(self.local_model or None, self.cloud_model or None)
        head.outcome = self.outcome.with_local(ability)
        head._gain_stats = None
        head.gain_stats()
        return head

    @property
    def model(self) -> OutcomeModel:
        """The outcome model of its pair's gain (what a gateway fits the local ability on: :class:`LearnsLocal`)."""
        return self.outcome.model

    @property
    def learnt_local(self) -> Ability | None:
        return self.outcome.learnt_local

    def prior_local(self) -> Ability:
        return self.outcome.prior_local()

    def gain_stats(self) -> tuple[float, float]:
        """Mean and spread of the configured pair's gain over the reference queries."""
        if self._gain_stats is None:
            g = self.outcome.gain(self.reference) if len(self.reference) else np.zeros(1)
            self._gain_stats = (float(g.mean()), max(float(g.std()), 1e-6))
        return self._gain_stats

    def pair(self) -> tuple[Ability, Ability]:
        return self.outcome.pair()

    def gain(self, x: np.ndarray) -> np.ndarray:
        return self.outcome.gain(x)

    def local_failure(self, x: np.ndarray) -> np.ndarray:
        return self.outcome.local_failure(x)

    def abilities(self) -> dict[str, Any]:
        return self.outcome.abilities()

    def describe_pair(self) -> str:
        """The abilities, and whether their gain is scored at all (not with the prior's local ability)."""
        described = self.outcome.describe_pair()
        return described if self.knows_pair() else f"{described}; pair gain unused until the local ability is known"

    # -- scoring ----------------------------------------------------------------------------------------------

    def _raw_terms(self, x: np.ndarray, neighbours: np.ndarray | None = None) -> dict[str, np.ndarray]:
        out = super()._raw_terms(x, neighbours)
        if self.knows_pair():
            mean, sd = self.gain_stats()
            out["pair gain"] = self.w_gain * (self.outcome.gain(x) - mean) / sd
        return out

    def knows_pair(self) -> bool:
        """Whether the pair's gain is scored: only once the local model's ability is known (the catalogue's, or
        learnt from labels, this gateway's or its fleet's). With the prior's local ability the gain says only "hard
        queries gain", which ranks backwards: with neither model known the 40-prompt guard puts 18.5 % of chat's
        hard/easy pairs in order, and with the cloud known and the local hidden (the across-sources *new model*
        rows at N = 0) it cost 0.009-0.108 APGR against the pair-free part. So an unknown local model scores with
        the pair-free part alone until its ability is learnt (``serving/router_adapt.py``)."""
        return self.outcome.pair()[0].origin != "prior"

    # -- saving -----------------------------------------------------------------------------------------------

    def _settings(self) -> tuple[str, ...]:
        return ("k", "tau", "w_length", "w_neighbours", "w_topic", "w_rules", "alpha", "bound", "C", "shrinkage",
                "centroids_k", "seed", "emb_dim", "w_gain")

    def load_params(self, params: Mapping[str, Any]) -> None:
        self.outcome = OutcomeHead(self.local_model, self.cloud_model)
        self.outcome.load_params(params)

    def params(self) -> dict[str, Any]:
        outcome = self.outcome.params()
        return {**super().params(), "w_gain": self.w_gain, "local_model": self.local_model, "cloud_model": self.cloud_model,
                "target": "gain of the source's pairs, centred within source", "outcome_model": outcome["outcome_model"],
                "catalogue": outcome["catalogue"]}

    def arrays(self) -> dict[str, np.ndarray]:
        return {**super().arrays(), "reference": self.reference, **{f"outcome_{k}": v for k, v in self.outcome.arrays().items()}}

    def load_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        super().load_arrays(arrays)
        graded = GradedNeighbours(k=self.k, tau=self.tau)
        graded.load_arrays(self.neighbours.arrays())
        self.neighbours = graded
        (reference,) = need(arrays, "reference")
        self.reference = reference.astype(np.float32)
        prefix = "outcome_"
        self.outcome.load_arrays({k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)})
        self._gain_stats = None


def build_pair_blend(model: OutcomeModel, data: TrainingSet, **settings: Any) -> PairBlendHead:
    """The head for the catalogue-free pair: ``model`` (fitted on the same rows' outcomes) and the blend part
    fitted on ``data``."""
    head = PairBlendHead(**settings)
    head.outcome = OutcomeHead(model=model)
    head.fit(data)
    return head
