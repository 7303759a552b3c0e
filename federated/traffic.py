"""What a federation's training rounds cost on the wire, measured where the server hands messages to Flower.

The same counter wraps the grid of a plain run and of a secure one, so the two
are compared on one measure: the serialised size (Flower's protobuf) of every
training message's records, both ways, and the wall time of each round.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from flwr.app import Message
from flwr.app.message_type import MessageType
from flwr.common.serde import recorddict_to_proto


def content_bytes(msg: Message) -> int:
    return int(recorddict_to_proto(msg.content).ByteSize()) if msg.has_content() else 0


class CountingGrid:
    """A Flower grid that counts the bytes of the training messages it sends and receives; everything else is
    the wrapped grid's."""

    def __init__(self, grid: Any) -> None:
        self._grid = grid
        self.train_bytes = 0
        self.round_starts: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        train = [m for m in messages if m.metadata.message_type.startswith(MessageType.TRAIN)]
        self.train_bytes += sum(content_bytes(m) for m in train)
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        if train:
            self.train_bytes += sum(content_bytes(r) for r in replies if r.metadata.message_type.startswith(MessageType.TRAIN))
        return replies

    def mark_round(self) -> None:
        self.round_starts.append(time.perf_counter())

    def seconds_per_round(self) -> float | None:
        """The mean time between the evaluations that close consecutive rounds (round 0 is the start)."""
        if len(self.round_starts) < 2:
            return None
        return (self.round_starts[-1] - self.round_starts[0]) / (len(self.round_starts) - 1)
