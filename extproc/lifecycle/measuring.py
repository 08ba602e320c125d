"""The meter: a bounded series of metric samples per running sandbox, as E2B keeps.

Every `interval_s` one sweep samples every running sandbox; a paused one gets no new
samples, as its processes are stopped. A sandbox's first sample is taken as soon as its
Create commits (the meter follows the backend's CREATED events), so a fresh sandbox has
one at once, and `series` takes one on the spot if the buffer is still empty (just
created, or re-adopted after a restart), so a live sandbox never answers [].

Reading runs on one worker thread of its own (`readings`: cgroup files, one pass over /proc,
statvfs), never on the event loop, and one at a time, so the reader's per-sandbox state
needs no lock; a sweep over many sandboxes is one hop to that thread, not one per sandbox.
Buffers live on the loop (`metric_history`); `forget` frees a sandbox's when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from extproc.core.errors import Unavailable
from extproc.lifecycle.metric_history import MetricHistory
from extproc.lifecycle.readings import Reader, Target
from extproc.lifecycle.reaping import Clock
from extproc.lifecycle.sandboxes import EventType, Metric
from extproc.lifecycle.watching import Hub

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_INTERVAL_S = 5.0
DEFAULT_MAX_SAMPLES = 720  # an hour at 5 s


class Meter:
    def __init__(
        self,
        *,
        clock: Clock,
        hub: Hub,
        running: Callable[[], list[Target]],
        target_of: Callable[[str], Target | None],
        interval_s: float = DEFAULT_INTERVAL_S,
        max_samples: int = DEFAULT_MAX_SAMPLES,
    ) -> None:
        """`running`: a target per running sandbox, for a sweep. `target_of`: the target of
        a live sandbox (running or paused), None once it has ended."""
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, not {interval_s}")
        self.interval_s = interval_s
        self.history = MetricHistory(max_samples)
        self._clock = clock
        self._hub = hub
        self._running = running
        self._target_of = target_of
        self._reader = Reader()
        self._worker: ThreadPoolExecutor | None = None
        # Sweeps completed, failed ones included (a progress count for observers).
        self.sweeps = 0

    # -- the worker thread ----------------------------------------------------------------

    async def _on_worker(self, call: Callable[..., T], *args: object) -> T:
        if self._worker is None:
            self._worker = ThreadPoolExecutor(1, thread_name_prefix="lifecycle-metrics")
        return await asyncio.get_running_loop().run_in_executor(self._worker, call, *args)

    async def _record(self, targets: Sequence[Target]) -> None:
        """One sample of each target, into its buffer."""
        if not targets:
            return
        for target in targets:
            self.history.open(target.sandbox.sandbox_id)
        samples = await self._on_worker(self._reader.read, targets, self._clock())
        for sandbox_id, metric in samples.items():
            self.history.append(sandbox_id, metric)  # a no-op if it ended meanwhile

    # -- the tasks ------------------------------------------------------------------------

    async def run(self) -> None:
        """Sweep every `interval_s`, and take each new sandbox's first sample, until
        cancelled."""
        firsts = asyncio.create_task(self._first_samples(), name="lifecycle-metrics-first")
        try:
            loop = asyncio.get_running_loop()
            while True:
                started = loop.time()
                try:
                    await self._record(self._running())
                except Exception:
                    log.exception("metrics sweep failed")
                self.sweeps += 1
                # A sweep slower than the interval starts the next at once, never two at once.
                await asyncio.sleep(max(started + self.interval_s - loop.time(), 0.0))
        finally:
            firsts.cancel()
            await asyncio.gather(firsts, return_exceptions=True)
            if self._worker is not None:
                self._worker.shutdown(wait=False, cancel_futures=True)
                self._worker = None

    async def _first_samples(self) -> None:
        while True:
            try:
                # No snapshot of the sandboxes already there: the sweeps cover those.
                async for event in self._hub.watch(list):
                    if event.type is EventType.CREATED and event.sandbox is not None:
                        target = self._target_of(event.sandbox.sandbox_id)
                        if target is not None:
                            await self._record([target])
            except Unavailable:
                # Fell behind a burst of events and was cut off: the next sweep samples
                # whatever was missed.
                log.debug("metrics: re-watching sandbox events after falling behind")
            except Exception:
                log.exception("metrics: first sample failed")

    # -- reading and freeing --------------------------------------------------------------

    async def series(self, target: Target, start: int | None, end: int | None) -> list[Metric]:
        """The sandbox's samples with start <= timestamp <= end (whole unix seconds,
        inclusive; None is unbounded). An empty buffer first gets one sample taken now."""
        sandbox_id = target.sandbox.sandbox_id
        if not self.history.samples(sandbox_id):
            await self._record([target])
        return self.history.window(sandbox_id, start, end)

    def forget(self, sandbox_id: str) -> None:
        """Free the sandbox's buffer and reader state (it has ended)."""
        self.history.forget(sandbox_id)
        if self._worker is None:
            self._reader.forget(sandbox_id)
            return
        # On the worker, after any read of this sandbox still in flight.
        with contextlib.suppress(RuntimeError):  # shut down meanwhile
            self._worker.submit(self._reader.forget, sandbox_id)
