"""The controller runtime the fake controllers share: level-triggered reconciles of one key at
a time, as controller-runtime runs upstream's.

A change of the controller's own plural queues that object's key; a change of a watched plural
queues the keys its mapper returns. Each queued key waits `delay_s` (the cluster's controller
delay) and is then reconciled by one synchronous call: reads and writes happen with no await
between them, so a concurrent HTTP write can neither be lost nor seen half-way. Because every
reaction takes at least the delay, upstream's ordering races (a claim's Sandbox exists before
its Pod) show up here as they do on a cluster. Keys queued again while waiting are coalesced:
the reconcile reads the state of that moment, not of the event.

`requeue_after` asks for a reconcile at a later time (shutdownTime, a retry); each reconcile
of a key cancels the key's pending timer first, so the timer always follows the latest state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable

from e2e_k8s.objects import Key, Obj, Store, key_of

Mapper = Callable[[Obj], Iterable[Key]]


class Controller:
    plural: str = ""  # the kind this controller owns

    def __init__(self, api: Store, delay_s: float) -> None:
        self.api = api
        self.delay_s = delay_s
        self.log = logging.getLogger(f"fake-{type(self).__name__}")
        self._waiting: set[Key] = set()
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopped = False

    def watches(self) -> dict[str, Mapper]:
        """Other plurals whose changes concern objects of ours: plural -> keys to reconcile."""
        return {}

    def reconcile(self, key: Key) -> None:
        raise NotImplementedError

    # -- running -------------------------------------------------------------------------
    def start(self) -> None:
        for key in list(self.api.objects.get(self.plural, {})):
            self.enqueue(key)
        self.api.listeners.append(self._on_change)

    async def stop(self) -> None:
        self._stopped = True
        with contextlib.suppress(ValueError):
            self.api.listeners.remove(self._on_change)
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _on_change(self, plural: str, _event: str, obj: Obj) -> None:
        # Called by the fake API inside each write: only queue, never write from here.
        if plural == self.plural:
            self.enqueue(key_of(obj))
            return
        mapper = self.watches().get(plural)
        if mapper is not None:
            for key in mapper(obj):
                self.enqueue(key)

    def enqueue(self, key: Key) -> None:
        if self._stopped or key in self._waiting:
            return
        self._waiting.add(key)
        task = asyncio.get_running_loop().create_task(self._reconcile_later(key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def requeue_after(self, key: Key, seconds: float) -> None:
        if self._stopped:
            return
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(max(seconds, 0.0), self.enqueue, key)

    async def _reconcile_later(self, key: Key) -> None:
        await asyncio.sleep(self.delay_s)
        self._waiting.discard(key)
        if timer := self._timers.pop(key, None):
            timer.cancel()
        try:
            self.reconcile(key)
        except Exception:
            # As controller-runtime does: log, and try again later.
            self.log.exception("reconcile of %s/%s failed", *key)
            self.requeue_after(key, 1.0)
