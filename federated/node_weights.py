"""The node-choice weights, learnt across a fleet: one more small array through the same Flower apps.

Each gateway fits its own weights on its own answers (``serving/node_stats.py``).
After the routing rounds the server asks every gateway for them in one query
message (``query.node_weights``): four numbers and the count of answers that
taught them, never a latency or a node name. It checks each reply (four finite
numbers within the bounds, a count that is a non-negative integer, capped),
leaves out gateways that learnt from too few answers, and takes the
coordinate-wise median, so a minority of gateways sending extreme weights
cannot move the fleet's. The result is published with the router; each gateway
then keeps its own weights if the fleet's predict its latencies worse.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid

from hybridgate.classifiers.node_weights import NodeWeights, NodeWeightsError

log = logging.getLogger(__name__)

ACTION = "node_weights"
MAX_ANSWERS = 100_000  # a gateway's count is capped: it cannot buy weight by claiming more
NodeWeightsSource = Callable[[Context], "tuple[NodeWeights, int] | None"]


def from_description(data: Any) -> tuple[NodeWeights, int]:
    """Weights and answer count from what ``GET /v1/hybridgate/nodes`` answers (or a file saved from it)."""
    w = data["weights"]
    return NodeWeights.from_array([w[k] for k in ("intercept_ms", "cpu", "ai", "nl")]), int(data.get("answers_learnt", 0))


def file_source(path: str | Path) -> tuple[NodeWeights, int]:
    return from_description(json.loads(Path(path).read_text()))


def register(app: ClientApp, source: NodeWeightsSource) -> None:
    """Answer the server's ``query.node_weights`` with this gateway's weights and count (none: an empty reply)."""

    @app.query(ACTION)
    def _node_weights(msg: Message, context: Context) -> Message:
        try:
            mine = source(context)
        except Exception as exc:  # noqa: BLE001 - a gateway that cannot say sends nothing, the round goes on
            log.warning("no node weights to send: %s", exc)
            mine = None
        if mine is None:
            return Message(content=RecordDict({"metrics": MetricRecord({"answers": 0})}), reply_to=msg)
        weights, answers = mine
        content = RecordDict({"arrays": ArrayRecord([weights.array().astype(np.float64)]), "metrics": MetricRecord({"answers": int(answers)})})
        return Message(content=content, reply_to=msg)


def checked_reply(content: RecordDict, min_answers: int) -> tuple[NodeWeights, int] | None:
    """One gateway's reply if it is well formed and learnt from enough answers; None otherwise (and why, logged)."""
    try:
        answers = content["metrics"]["answers"]
        if isinstance(answers, bool) or not isinstance(answers, int) or answers < 0:
            raise NodeWeightsError(f"answer count {answers!r} is not a non-negative integer")
        if answers < min_answers:
            return None
        arrays = content["arrays"].to_numpy_ndarrays()
        if len(arrays) != 1:
            raise NodeWeightsError(f"{len(arrays)} arrays instead of one")
        return NodeWeights.from_array(arrays[0]), min(answers, MAX_ANSWERS)
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("node weights refused: %s", exc)
        return None


def combine(replies: Iterable[RecordDict], min_answers: int) -> tuple[NodeWeights | None, dict[str, Any]]:
    """The coordinate-wise median of the well-formed replies that learnt from enough answers."""
    kept: list[NodeWeights] = []
    answers = replied = 0
    for content in replies:
        replied += 1
        got = checked_reply(content, min_answers)
        if got is not None:
            kept.append(got[0])
            answers += got[1]
    report = {"replied": replied, "used": len(kept), "answers": answers}
    if not kept:
        return None, report
    return NodeWeights.from_array(np.median(np.stack([w.array() for w in kept]), axis=0)), report


def pool(grid: Grid, current: NodeWeights, *, min_answers: int = 20, timeout: float = 120.0) -> tuple[NodeWeights | None, dict[str, Any]]:
    """Ask every gateway in one query message and combine what comes back."""
    nodes = list(grid.get_node_ids())
    messages = [
        Message(content=RecordDict({"arrays": ArrayRecord([current.array()])}), dst_node_id=n, message_type=f"query.{ACTION}")
        for n in nodes
    ]
    replies = [r.content for r in grid.send_and_receive(messages, timeout=timeout) if not r.has_error()]
    fleet, report = combine(replies, min_answers)
    return fleet, {"asked": len(nodes), **report}
