"""One background step, repeated on the event loop: health probes, the router watch, the router's adaptation."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)


class Periodic:
    """Runs ``step`` every ``interval_s`` until closed. A step that fails is logged, never fatal: a bad file, a
    probe bug or a failed fit must not stop the loop that would recover from it."""

    def __init__(self, name: str, step: Callable[[], Awaitable[Any]], interval_s: float) -> None:
        self.name = name
        self.step = step
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.step()
            except Exception:  # noqa: BLE001 - see the class docstring
                log.exception("%s failed", self.name)
            await asyncio.sleep(max(0.0, self.interval_s - (time.monotonic() - started)))

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
