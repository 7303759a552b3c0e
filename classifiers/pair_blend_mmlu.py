"""The pair-blend head with what the default learnt on MMLU kept as a sixth signal.

The pair-blend head (:mod:`.pair_blend_head`) draws its neighbours and topic from
every source's rows, each row's gain centred within its source, and adds the
configured pair's expected gain. On MMLU that dilutes what ``blend-static``
learnt from ``routellm-mmlu`` alone (its in-distribution and transfer gates fall
from 0.640 / 0.606 to at best 0.629 / 0.563, ``docs/across-sources.md``). This
head adds, as one more standardised term, ``blend-static``'s recipe refitted on
``routellm-mmlu``'s rows (its own length, neighbours with the *uncentred* gain,
topic and rules; or only some of them, by its part weights), so the sum keeps
the MMLU signal while the other terms carry to the other sources.

On multiple-choice queries (the shape features' ``choices``: every row of the
two exams, almost none of chat) the pair-blend part's terms can be damped to
``w_choice`` of their weight: at 0 such a query is scored by the MMLU part alone,
as ``blend-static`` scores it, and open requests by the whole sum. The rules of
``blend-static`` already draw this line (they are silent on lettered options).

The MMLU part is standardised over its own training queries, each scored
without itself (its neighbours left one out), as ``blend-static`` standardises
its neighbours; its weight ``w_mmlu`` says how much of it the sum takes. The
pair, its gain and a local model's ability are the pair-blend part's: this head
answers ``with_pair``, ``with_local``, ``knows_pair`` and ``outcome`` through it.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from hybridgate.classifiers.blend_head import _CHOICES, BlendHead, platt
from hybridgate.classifiers.heads import HeadError, TrainingSet, make_head
from hybridgate.classifiers.numeric import need
from hybridgate.classifiers.pair_blend_head import PairBlendHead
from hybridgate.classifiers.pair_score import Ability
from hybridgate.classifiers.sources import Source

PART_PREFIX = "mmlu_part_"


@dataclass
class MmluBlendHead(PairBlendHead):
    """The pair-blend head's terms plus ``w_mmlu`` times the standardised sum of a blend head fitted on MMLU."""

    kind: ClassVar[str] = "pair-blend-mmlu"
    w_mmlu: float = 1.0
    w_choice: float = 1.0  # the pair-blend part's weight on multiple-choice queries (1: as on open requests)
    mmlu: BlendHead = field(default_factory=BlendHead)
    mmlu_stats: np.ndarray = field(default_factory=lambda: np.array([0.0, 1.0], dtype=np.float32))  # mean, spread

    # -- the pair (the pair-blend part's) -----------------------------------------------------------------------

    def with_pair(self, local: str | None, cloud: str | None) -> MmluBlendHead:
        """This head scoring for another pair: the pair-blend part re-paired, the MMLU part unchanged."""
        return self._around(PairBlendHead.with_pair(self, local, cloud))

    def with_local(self, ability: Ability | None) -> MmluBlendHead:
        return self._around(PairBlendHead.with_local(self, ability))

    def _around(self, base: PairBlendHead) -> MmluBlendHead:
        """``base``'s pair-blend fields with this head's MMLU part and weight."""
        out = copy.copy(self)
        for f in dataclasses.fields(PairBlendHead):
            setattr(out, f.name, getattr(base, f.name))
        return out

    def pair_blend(self) -> PairBlendHead:
        """The pair-blend part alone (what this head adds the MMLU term to)."""
        base = PairBlendHead(**{k: getattr(self, k) for k in self._settings()})
        for f in dataclasses.fields(PairBlendHead):
            setattr(base, f.name, getattr(self, f.name))
        return base

    # -- scoring ------------------------------------------------------------------------------------------------

    def _raw_terms(self, x: np.ndarray, neighbours: np.ndarray | None = None) -> dict[str, np.ndarray]:
        out = super()._raw_terms(x, neighbours)
        if self.w_choice != 1.0:
            choice = np.clip(self.split(x)[1][:, _CHOICES], 0.0, 1.0)
            damp = 1.0 - (1.0 - self.w_choice) * choice
            out = {name: damp * v for name, v in out.items()}
        if self.w_mmlu:
            mean, sd = float(self.mmlu_stats[0]), float(self.mmlu_stats[1])
            out["MMLU blend"] = self.w_mmlu * (self.mmlu._sum(x) - mean) / sd
        return out

    # -- saving -------------------------------------------------------------------------------------------------

    def params(self) -> dict[str, Any]:
        return {**super().params(), "w_mmlu": self.w_mmlu, "w_choice": self.w_choice, "mmlu_part": self.mmlu.params()}

    def load_params(self, params: Mapping[str, Any]) -> None:
        super().load_params(params)
        part = params.get("mmlu_part")
        if not isinstance(part, Mapping):
            raise HeadError("a pair-blend-mmlu head's header must carry its MMLU part's settings (mmlu_part)")
        head = make_head("blend", part)
        assert isinstance(head, BlendHead)
        self.mmlu = head

    def arrays(self) -> dict[str, np.ndarray]:
        return {**super().arrays(), "mmlu_standard": self.mmlu_stats, **{PART_PREFIX + k: v for k, v in self.mmlu.arrays().items()}}

    def load_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        super().load_arrays({k: v for k, v in arrays.items() if not k.startswith(PART_PREFIX)})
        (stats,) = need(arrays, "mmlu_standard")
        if stats.shape != (2,):
            raise HeadError(f"this router's MMLU part standardisation has shape {stats.shape}; this version reads 2 numbers")
        self.mmlu_stats = stats.astype(np.float32)
        self.mmlu.load_arrays({k[len(PART_PREFIX):]: v for k, v in arrays.items() if k.startswith(PART_PREFIX)})


def mmlu_part_data(src: Source, inputs: np.ndarray, mask: np.ndarray, pair: tuple[str, str]) -> TrainingSet:
    """``src``'s rows ``mask`` (``inputs``: its query inputs) as ``blend-static``'s recipe reads them: the ``pair``'s
    gain as it is (strong grade minus weak), rows where both are graded."""
    w, s = src.column(pair[0]), src.column(pair[1])
    idx = np.nonzero(mask & ~np.isnan(w) & ~np.isnan(s))[0]
    g = (s[idx] - w[idx]).astype(np.int8)
    return TrainingSet(inputs[idx].astype(np.float32), (g > 0).astype(np.int64), g, [src.groups[i] for i in idx])


def fit_mmlu_part(data: TrainingSet, emb_dim: int, **settings: Any) -> BlendHead:
    """``blend-static``'s recipe (the blend head's defaults unless ``settings`` say otherwise) on MMLU rows: the
    pair's gain as it is (not centred: one source, one pair), "the strong model right and the weak one wrong" as
    label."""
    part = BlendHead(emb_dim=emb_dim, **settings)
    part.fit(data)
    return part


def part_stats(part: BlendHead, x: np.ndarray) -> np.ndarray:
    """Mean and spread of the part's sum over its own training queries ``x`` (the rows it was fitted on, in
    order), each scored with its neighbours left one out: how it scores queries it never saw."""
    s = part._sum(x, neighbours=part.neighbours.score_left_out())
    return np.array([s.mean(), max(float(s.std()), 1e-6)], dtype=np.float32)


def combine(head: PairBlendHead, part: BlendHead, part_x: np.ndarray, w_mmlu: float, data: TrainingSet | None = None,
            w_choice: float = 1.0, **part_weights: float) -> MmluBlendHead:
    """The fitted pair-blend ``head`` with the fitted MMLU ``part`` (``part_x``: its training inputs) at ``w_mmlu``
    (and the pair-blend part at ``w_choice`` on multiple-choice queries);
    ``part_weights`` (``w_length``, ``w_neighbours``, ``w_topic``, ``w_rules``) reweight the part's own terms
    before it is standardised. With ``data`` (the pair-blend head's training rows, in order), the Platt scale is
    refitted on the new sum; without it the pair-blend head's scale is kept (the ranking is the same)."""
    part = copy.copy(part)
    for name, value in part_weights.items():
        if not name.startswith("w_") or not hasattr(part, name):
            raise ValueError(f"{name} is not a weight of the MMLU part")
        setattr(part, name, float(value))
    out = MmluBlendHead(**{k: getattr(head, k) for k in head._settings()}, w_mmlu=float(w_mmlu), w_choice=float(w_choice))
    for f in dataclasses.fields(PairBlendHead):
        setattr(out, f.name, getattr(head, f.name))
    out.mmlu, out.mmlu_stats = part, part_stats(part, part_x)
    if data is not None:
        out.scale = platt(out._sum(data.x, neighbours=out.neighbours.score_left_out()), data.label)
    return out
