"""What the router decides with, as one value: the scorer (with any correction), its thresholds, their version.

A decision runs on the gateway's CPU thread while the event loop may load a new
router, adopt a correction learnt from this gateway's labels, or recalibrate the
thresholds. Each of those builds a whole new :class:`RoutingSnapshot` and puts it
in the :class:`SnapshotSlot` with one assignment; a decision reads the slot once,
at its start, and uses that snapshot to the end. So a decision never mixes a new
model with the old thresholds or the old model's correction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from hybridgate.router.decision import RouteQuery
from hybridgate.router.scorer import Scored, Scorer, scoring, version_of


@dataclass(frozen=True)
class RoutingSnapshot:
    """Everything a decision reads that changes while the gateway serves; replaced whole, never changed."""

    scorer: Scorer  # immutable: a new router or correction is a new scorer
    threshold: float = 0.5  # t_cloud: at or above, the cloud
    t_local: float | None = None  # below, local; None: the same as threshold (no collaborative band)
    serial: int = 0  # one more with every replacement: which snapshot a decision used
    # Derived from the scorer once, when the snapshot is made: a decision only calls them.
    score: Callable[[RouteQuery], Scored] = field(init=False, repr=False, compare=False)
    version: str | None = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "score", scoring(self.scorer))
        object.__setattr__(self, "version", version_of(self.scorer))

    @property
    def t_low(self) -> float:
        return self.threshold if self.t_local is None else min(self.t_local, self.threshold)


class SnapshotSlot:
    """The one place the routing snapshot is kept; shared by a policy and the live scorer that feeds it.

    Written from one thread (the event loop) by :meth:`swap`, read from any by ``snapshot``."""

    __slots__ = ("snapshot",)

    def __init__(self, snapshot: RoutingSnapshot) -> None:
        self.snapshot = snapshot

    def swap(self, **changes: Any) -> RoutingSnapshot:
        """Replace the snapshot with a copy changed by ``changes``, in one assignment; returns the new one."""
        new = replace(self.snapshot, serial=self.snapshot.serial + 1, **changes)
        self.snapshot = new
        return new


class LiveScorer:
    """A scorer handle whose scorer is replaced while the gateway runs (a reload, a correction): it keeps the
    scorer in a :class:`SnapshotSlot`, which a policy built on it shares, so both see each replacement at once."""

    slot: SnapshotSlot
