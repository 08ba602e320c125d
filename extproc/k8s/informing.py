"""A generic informer: LIST with a resourceVersion, then WATCH from it, forever.

Threads: the official client is blocking, so each informer owns one worker thread (a
one-thread executor) that performs its LIST and holds its WATCH open; every event is handed
to the event loop with `call_soon_threadsafe`. Everything else (the store, the status, the
handlers, 410 and backoff decisions) runs on the loop thread. One thread per informer rather
than `asyncio.to_thread`: a watch blocks for minutes and must not occupy the loop's shared
default pool.

The store is a dict mutated on the loop thread only, not an immutable snapshot. Readers
(Check) run on the same loop and never await between reading and using an entry, so they
cannot see a half-applied event; copying a 10 000-object map per event would cost O(n) for
a guarantee the loop already gives. Consumers that want a snapshot (the key index) build
one in their handler.

Failure handling: a 410 (HTTP status on the watch or an ERROR event with code 410) drops the
resourceVersion and relists; the relist is diffed against the store so handlers see only real
adds, updates and deletes. Any other failure keeps the store as it is, marks the status
disconnected, waits an exponential, bounded, jittered delay, and resumes the watch from the
last resourceVersion (relisting only if that is gone). Bookmarks only advance the
resourceVersion.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import Any, Protocol

import urllib3
from kubernetes.client.exceptions import ApiException

from extproc.k8s.listwatch import (
    KubeObject,
    Listing,
    ResourceGone,
    WatchFailed,
    WatchStream,
    WatchTarget,
    list_all,
    status_code,
)
from extproc.k8s.settings import InformerSettings

log = logging.getLogger(__name__)

# A watch that ends on its own sooner than this, having delivered nothing, counts as a
# failure for backoff, so a proxy that closes every stream at once cannot make us spin.
_SHORT_WATCH_S = 1.0
# Failures that mean "the API server cannot be reached or answered badly", logged in one line.
_EXPECTED = (ApiException, urllib3.exceptions.HTTPError, OSError, ValueError, WatchFailed)


class InformerHandler(Protocol):
    """Called on the loop thread, in event order; must not block or await."""

    def on_add(self, obj: KubeObject) -> None: ...

    def on_update(self, old: KubeObject, new: KubeObject) -> None: ...

    def on_delete(self, obj: KubeObject) -> None: ...


def object_key(obj: Mapping[str, Any]) -> str:
    """`namespace/name`, or `name` for a cluster-scoped object (client-go's key)."""
    metadata = obj.get("metadata") or {}
    name = str(metadata.get("name") or "")
    namespace = metadata.get("namespace")
    return f"{namespace}/{name}" if namespace else name


def _resource_version(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


@dataclass(slots=True)
class InformerStatus:
    """Health and metrics of one informer; mutated on the loop thread only."""

    # True while the last list or watch request was answered and the watch is running.
    connected: bool = False
    # True once the first list has been applied (stays True: the cache is kept).
    synced: bool = False
    # Wall-clock seconds of the last moment the cache was known current: a list applied, or
    # a watch event or bookmark received. None before the first list.
    last_sync_at: float | None = None
    # The last failure, one line, None after a list or watch succeeds again.
    last_error: str | None = None
    # Lists after the first (410 Gone, or a failed resume).
    relists: int = 0
    # Watch events applied (bookmarks excluded).
    events: int = 0
    resource_version: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Informer:
    def __init__(
        self,
        target: WatchTarget,
        settings: InformerSettings,
        handlers: Iterable[InformerHandler] = (),
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.target = target
        self._settings = settings
        self._handlers = tuple(handlers)
        self._clock = clock
        self._monotonic = monotonic
        self._rng = rng
        self._store: dict[str, KubeObject] = {}
        self.store: Mapping[str, KubeObject] = MappingProxyType(self._store)
        self.status = InformerStatus()
        self.synced = asyncio.Event()
        self._changed = asyncio.Condition()
        self._failures = 0
        self._stream: WatchStream | None = None

    async def wait_for(self, predicate: Callable[[Informer], bool]) -> None:
        """Return once `predicate(self)` holds; it is re-checked after every change."""
        async with self._changed:
            await self._changed.wait_for(lambda: predicate(self))

    async def run(self) -> None:
        """List and watch until cancelled. The store and status survive every failure."""
        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(1, thread_name_prefix=f"informer-{self.target.name}")
        try:
            while True:
                try:
                    if not self.status.resource_version:
                        listing = await loop.run_in_executor(
                            executor, list_all, self.target, self._settings
                        )
                        self._apply_list(listing)
                    started = self._monotonic()
                    events_before = self.status.events
                    await self._watch(loop, executor)
                    quiet = self.status.events == events_before
                    if quiet and self._monotonic() - started < _SHORT_WATCH_S:
                        await asyncio.sleep(self._next_delay())
                except ResourceGone as gone:
                    log.info("%s: %s; relisting", self.target.name, gone)
                    self.status.resource_version = ""
                    await self._notify()
                except _EXPECTED as error:
                    await self._failed(error, unexpected=False)
                except Exception as error:  # a bug must not end the informer; log it fully
                    await self._failed(error, unexpected=True)
        finally:
            if self._stream is not None:
                self._stream.abort()
            executor.shutdown(wait=False, cancel_futures=True)

    async def _failed(self, error: Exception, *, unexpected: bool) -> None:
        message = _describe(error)
        if unexpected:
            log.exception("%s: informer error", self.target.name)
        elif message != self.status.last_error:
            log.warning("%s: keeping the cache, API unreachable: %s", self.target.name, message)
        self.status.connected = False
        self.status.last_error = message
        await self._notify()
        await asyncio.sleep(self._next_delay())

    def _next_delay(self) -> float:
        delay = self._settings.backoff.delay(self._failures, self._rng)
        self._failures = min(self._failures + 1, 64)
        return delay

    async def _watch(self, loop: asyncio.AbstractEventLoop, executor: ThreadPoolExecutor) -> None:
        queue: asyncio.Queue[_Item] = asyncio.Queue()

        def emit(item: _Item) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def work(stream: WatchStream, resource_version: str) -> None:
            try:
                stream.run(resource_version, lambda: emit(_OPENED), emit)
            except BaseException as error:  # handed to the loop, which decides
                emit(_End(error))
            else:
                emit(_End(None))

        stream = self._stream = WatchStream(self.target, self._settings)
        loop.run_in_executor(executor, work, stream, self.status.resource_version)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, _Opened):
                    self._opened()
                elif isinstance(item, _End):
                    if item.error is not None:
                        raise item.error
                    return
                else:
                    self._apply_event(item)
                await self._notify()
        finally:
            stream.abort()
            self._stream = None

    def _opened(self) -> None:
        self.status.connected = True
        self.status.last_error = None
        self._failures = 0

    def _apply_list(self, listing: Listing) -> None:
        if self.status.synced:
            self.status.relists += 1
        fresh = {object_key(obj): obj for obj in listing.items}
        store = self._store
        for key in [key for key in store if key not in fresh]:
            self._dispatch("on_delete", store.pop(key))
        for key, obj in fresh.items():
            old = store.get(key)
            store[key] = obj
            if old is None:
                self._dispatch("on_add", obj)
            elif _resource_version(old) != _resource_version(obj):
                self._dispatch("on_update", old, obj)
        self.status.resource_version = listing.resource_version
        self.status.last_sync_at = self._clock()
        self._opened()
        if not self.status.synced:
            self.status.synced = True
            self.synced.set()
            log.info("%s: synced %d objects", self.target.name, len(store))

    def _apply_event(self, event: KubeObject) -> None:
        kind = event.get("type")
        obj = event.get("object")
        if not isinstance(obj, dict):
            raise ValueError(f"{self.target.name}: {kind} event without an object")
        if kind == "ERROR":
            code = status_code(obj)
            message = str(obj.get("message") or obj.get("reason") or "")
            if code == 410:
                raise ResourceGone(f"watch expired: {message}")
            raise WatchFailed(f"watch error {code}: {message}")
        resource_version = _resource_version(obj)
        if kind == "BOOKMARK":
            if resource_version:
                self.status.resource_version = resource_version
            self.status.last_sync_at = self._clock()
            return
        key = object_key(obj)
        if kind in ("ADDED", "MODIFIED"):
            old = self._store.get(key)
            self._store[key] = obj
            if old is None:
                self._dispatch("on_add", obj)
            else:
                self._dispatch("on_update", old, obj)
        elif kind == "DELETED":
            self._store.pop(key, None)
            self._dispatch("on_delete", obj)
        else:
            log.warning("%s: ignoring watch event of type %r", self.target.name, kind)
            return
        self.status.events += 1
        if resource_version:
            self.status.resource_version = resource_version
        self.status.last_sync_at = self._clock()

    def _dispatch(self, method: str, *objs: KubeObject) -> None:
        for handler in self._handlers:
            try:
                getattr(handler, method)(*objs)
            except Exception:  # one broken handler must not stop the cache or the others
                log.exception("%s: handler %s failed", self.target.name, method)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()


class _Opened:
    pass


_OPENED = _Opened()


@dataclass(frozen=True, slots=True)
class _End:
    error: BaseException | None


_Item = _Opened | _End | KubeObject


def _describe(error: BaseException) -> str:
    if isinstance(error, ApiException):
        return f"HTTP {error.status} {error.reason or ''}".strip()
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}"[:300]


async def run_informers(informers: Iterable[Informer]) -> None:
    """Run several informers until cancelled (one named task each)."""
    async with asyncio.TaskGroup() as group:
        for informer in informers:
            group.create_task(informer.run(), name=f"informer-{informer.target.name}")
