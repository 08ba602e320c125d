"""The warm pool: sandboxes started ahead of demand, per template.

A pooled sandbox is a running picod with a pre-assigned id and access token and no tenant.
Create takes one without waiting (an empty pool means a cold start, never a queue), sends it
the tenant's env vars with POST /init, and the pool refills in the background. A pooled
sandbox that dies while it waits is disposed of (address and directory freed) at once. Pooled
sandboxes are not written to SQLite: after a crash, the restart kills every supervisor it has
no row for, which is exactly the pool.

A refill never starves running sandboxes: it starts one sandbox at a time, and with
`BACKGROUND` set, so the start's work runs at a low CPU priority (REFILL_NICE: the
lifecycle's worker thread while it prepares the sandbox, and the sandbox's processes until
a Create takes it, when they go back to normal). On an idle machine a refill is as fast as
before; on a busy one it takes what the running sandboxes leave.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
# True while a pool refill starts a sandbox (read by spawning and isolation).
BACKGROUND: contextvars.ContextVar[bool] = contextvars.ContextVar("background", default=False)
# The niceness of a refill's work: CFS weighs a nice-19 task at 15 against a nice-0 one's
# 1024, so it gets about 1.5% of a CPU that running sandboxes want, and the whole CPU when
# nothing else does.
REFILL_NICE = 19
# After a failed start, wait this long before trying again (seconds), doubling to the cap.
_BACKOFF_S, _BACKOFF_MAX_S = 0.5, 30.0


@dataclass(eq=False, repr=False)
class Pool(Generic[T]):
    name: str
    size: int
    start: Callable[[], Awaitable[T]]
    is_usable: Callable[[T], bool]
    room: Callable[[], bool]
    # Called once for each item found dead in the pool: it is no longer the pool's.
    dispose: Callable[[T], None]
    _ready: collections.deque[T] = field(init=False, default_factory=collections.deque)
    _starting: int = field(init=False, default=0)
    _wanted: asyncio.Event = field(init=False, default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._wanted.set()

    def take(self) -> T | None:
        """A ready sandbox, or None at once when there is none."""
        self._wanted.set()
        while self._ready:
            item = self._ready.popleft()
            if self.is_usable(item):
                return item
            self.dispose(item)
        return None

    def lost(self, item: T) -> None:
        """`item` died: if it still waits here, drop and dispose of it, and refill."""
        if item in self._ready:
            self._ready.remove(item)
            self.dispose(item)
            self._wanted.set()

    def drain(self) -> list[T]:
        items = list(self._ready)
        self._ready.clear()
        return items

    @property
    def ready(self) -> int:
        return len(self._ready)

    async def _one(self) -> bool:
        self._starting += 1
        token = BACKGROUND.set(True)
        try:
            item = await self.start()
        except Exception as exc:
            log.warning("pool %s: warm start failed: %s", self.name, exc)
            return False
        finally:
            BACKGROUND.reset(token)
            self._starting -= 1
        self._ready.append(item)
        return True

    async def run(self) -> None:
        backoff = _BACKOFF_S
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            if self.size - len(self._ready) - self._starting <= 0 or not self.room():
                continue
            # One start at a time (see the module docstring); then look again.
            if await self._one():
                backoff = _BACKOFF_S
            else:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
            self._wanted.set()  # more may be missing, and takes may have happened

    def poke(self) -> None:
        """Room may have appeared (a sandbox ended): re-check the pool's size."""
        self._wanted.set()
