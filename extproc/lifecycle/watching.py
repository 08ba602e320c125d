"""Fan-out of sandbox events to WatchSandboxes streams.

Each watcher gets a bounded queue. Publishing never waits: a watcher whose queue is full is
cut off (its stream ends with UNAVAILABLE and it re-watches, getting a fresh snapshot), so
one slow reader never delays Create or the other watchers. A snapshot and the subscription
are taken without an await in between, so no change falls between EXISTING and the stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from extproc.core.errors import Unavailable
from extproc.lifecycle.sandboxes import Event, EventType, Sandbox

QUEUE_SIZE = 4096


class _Watcher:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Event] = asyncio.Queue(QUEUE_SIZE)
        self.overflowed = asyncio.Event()


class Hub:
    def __init__(self) -> None:
        self.revision = 0
        self._watchers: set[_Watcher] = set()

    def publish(self, type_: EventType, sandbox: Sandbox) -> None:
        self.revision += 1
        event = Event(type_, sandbox, self.revision)
        for watcher in list(self._watchers):
            try:
                watcher.queue.put_nowait(event)
            except asyncio.QueueFull:
                self._watchers.discard(watcher)
                watcher.overflowed.set()

    @property
    def watchers(self) -> int:
        return len(self._watchers)

    async def watch(self, snapshot: Callable[[], list[Sandbox]]) -> AsyncIterator[Event]:
        watcher = _Watcher()
        live = snapshot()
        self._watchers.add(watcher)
        revision = self.revision
        try:
            for sandbox in live:
                yield Event(EventType.EXISTING, sandbox, revision)
            yield Event(EventType.SYNCED, None, revision)
            overflow = asyncio.ensure_future(watcher.overflowed.wait())
            try:
                while True:
                    if watcher.queue.empty():
                        getter = asyncio.ensure_future(watcher.queue.get())
                        await asyncio.wait([getter, overflow], return_when=asyncio.FIRST_COMPLETED)
                        if not getter.done():
                            getter.cancel()
                            raise Unavailable("watch fell behind and was closed; watch again")
                        yield getter.result()
                    else:
                        yield watcher.queue.get_nowait()
            finally:
                overflow.cancel()
        finally:
            self._watchers.discard(watcher)
