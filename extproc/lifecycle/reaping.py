"""Expiry: one timer armed on the earliest end_at, not a poll over every sandbox.

Deadlines sit in a heap of (end_at, id). Changing a sandbox's end_at just pushes a new entry;
stale entries are recognised when they come due (the sandbox's current end_at differs) and
dropped. An earlier deadline wakes the sleeping timer, so a 2 s sandbox expires within
milliseconds of its end, whatever else is scheduled.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

log = logging.getLogger(__name__)

# The timer never sleeps longer than this, so a stepped wall clock is noticed.
MAX_SLEEP_S = 30.0


class Clock(Protocol):
    def __call__(self) -> float:
        """Now, in unix seconds."""
        ...


class Reaper:
    def __init__(
        self,
        clock: Clock,
        current_end_at: Callable[[str], float | None],
        expire: Callable[[str], Awaitable[None]],
    ) -> None:
        self._clock = clock
        self._current_end_at = current_end_at
        self._expire = expire
        self._heap: list[tuple[float, str]] = []
        self._wake = asyncio.Event()

    def schedule(self, sandbox_id: str, end_at: float) -> None:
        earliest = self._heap[0][0] if self._heap else None
        heapq.heappush(self._heap, (end_at, sandbox_id))
        if earliest is None or end_at < earliest:
            self._wake.set()

    def due(self) -> list[str]:
        """Pop every entry whose time has come and that is still current."""
        now = self._clock()
        ready = []
        while self._heap and self._heap[0][0] <= now:
            end_at, sandbox_id = heapq.heappop(self._heap)
            if self._current_end_at(sandbox_id) == end_at:
                ready.append(sandbox_id)
        return ready

    async def run(self) -> None:
        while True:
            for sandbox_id in self.due():
                # One failure must not stop expiry of the others.
                try:
                    await self._expire(sandbox_id)
                except Exception:
                    log.exception("expiring sandbox %s failed", sandbox_id)
            self._wake.clear()
            delay = MAX_SLEEP_S
            if self._heap:
                delay = min(max(self._heap[0][0] - self._clock(), 0.0), MAX_SLEEP_S)
            if delay <= 0:
                continue
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a cancellation
            # that arrives as the wake event is set (cpython gh-86296), and the task then
            # never stops.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
