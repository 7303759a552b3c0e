"""Replicas behind one load balancer see each node as the fleet does, not as one process does.

Every ``state.node_share_s`` each replica writes its view of the nodes it can
reach (requests it has in flight there, the speed it measured, on how many
answers) into the shared state under its own name, with a time to live of
three intervals, and reads every other replica's. Their requests in flight add
to a node's load, and the speeds are pooled (:meth:`NodeStats.merge_fleet`).
A replica that dies stops writing: its view, in-flight requests included,
drops out within three intervals. The in-process model is each replica's own
and is not shared. With state in memory there is no fleet, and nothing runs.
"""

from __future__ import annotations

import logging
from typing import Any

from hybridgate.serving.node_stats import NodeStats
from hybridgate.serving.periodic import Periodic

log = logging.getLogger(__name__)


class NodeShare:
    def __init__(self, stats: NodeStats, state: Any, interval_s: float) -> None:
        self.stats = stats
        self.state = state
        self.interval_s = interval_s
        self.replica: str | None = getattr(state, "replica", None)
        self.replicas_seen = 0
        self._loop = Periodic("hybridgate-node-share", self.exchange, interval_s)

    @property
    def enabled(self) -> bool:
        return self.replica is not None and hasattr(self.state, "publish_nodes")

    async def exchange(self) -> None:
        assert self.replica is not None
        await self.state.publish_nodes(self.replica, self.stats.shared(), 3 * self.interval_s)
        fleet = await self.state.fleet_nodes()
        others = [view for name, view in fleet.items() if name != self.replica]
        self.replicas_seen = len(others)
        self.stats.merge_fleet(others)

    def start(self) -> None:
        if self.enabled:
            self._loop.start()

    async def aclose(self) -> None:
        await self._loop.aclose()
