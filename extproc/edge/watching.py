"""Keeping the directory in step with lifecycle, and the one fallback read on a miss.

`WatchSandboxes` sends a snapshot (EXISTING...), SYNCED, then every change with a revision
that grows by one. The snapshot is collected aside and swapped in whole at SYNCED, so a
reconnect never shows a half-empty directory; a revision gap or a broken stream means
re-watching (with doubling backoff) and rebuilding from the next snapshot.

A sandbox created a moment ago may not have reached us through the stream yet, so a miss
asks lifecycle once (GetSandbox with an empty tenant) before answering "not found". Both
calls cover every tenant, so both say so (`x-agentcube-e2b-scope: all-tenants`); the
lifecycle service refuses an empty tenant without it. Answers of NOT_FOUND are remembered
for a couple of seconds, and concurrent misses for one id share a single call, so a flood of
unknown ids cannot hammer lifecycle.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import grpc
from cachetools import TTLCache

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2_grpc as pb_grpc
from extproc.core.caller_token import ALL_TENANTS_METADATA
from extproc.core.errors import DeadlineExceeded, Unavailable
from extproc.edge.routes import Directory, Route, route_from_proto
from extproc.edge.settings import DirectorySettings

log = logging.getLogger(__name__)

_GONE = (
    pb.SANDBOX_EVENT_TYPE_KILLED,
    pb.SANDBOX_EVENT_TYPE_EXPIRED,
    pb.SANDBOX_EVENT_TYPE_DIED,
)


class _Resync(Exception):
    """The stream skipped a revision; start over from a new snapshot."""


class DirectoryFeed:
    def __init__(
        self,
        stub: pb_grpc.SandboxServiceStub,
        directory: Directory,
        settings: DirectorySettings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stub = stub
        self._directory = directory
        self._settings = settings
        self.synced = asyncio.Event()
        self._missing: TTLCache[str, bool] = TTLCache(
            maxsize=settings.negative_max, ttl=settings.negative_ttl_s, timer=clock
        )
        self._inflight: dict[str, asyncio.Future[Route | None]] = {}
        self.on_gone: Callable[[str], None] = lambda _sandbox_id: None

    # --- the stream ---------------------------------------------------------------------

    async def watch(self) -> None:
        """Follow WatchSandboxes forever, reconnecting with backoff."""
        delay = self._settings.backoff_initial_s
        while True:
            try:
                await self._follow_once()
            except (grpc.aio.AioRpcError, _Resync) as error:
                reason = error.code().name if isinstance(error, grpc.aio.AioRpcError) else "gap"
                log.warning("sandbox watch broke (%s); re-watching in %.1fs", reason, delay)
            else:
                log.warning("sandbox watch ended; re-watching in %.1fs", delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._settings.backoff_max_s)
            if self.synced.is_set():
                delay = self._settings.backoff_initial_s

    async def _follow_once(self) -> None:
        snapshot: dict[str, Route] | None = {}
        revision: int | None = None
        call = self._stub.WatchSandboxes(pb.WatchSandboxesRequest(), metadata=ALL_TENANTS_METADATA)
        try:
            async for event in call:
                # Snapshot events all carry the revision they were taken at; every change
                # after SYNCED must be exactly one more than the last.
                if snapshot is None and revision is not None and event.revision != revision + 1:
                    raise _Resync
                revision = event.revision
                if event.type == pb.SANDBOX_EVENT_TYPE_SYNCED:
                    if snapshot is not None:
                        self._directory.replace_all(snapshot)
                        self._missing.clear()
                        snapshot = None
                        log.info("sandbox directory synced: %d sandboxes", len(self._directory))
                        self.synced.set()
                    continue
                route = route_from_proto(event.sandbox)
                if snapshot is not None:
                    if route.state != pb.SANDBOX_STATE_ENDED:
                        snapshot[route.sandbox_id] = route
                    continue
                self._apply(event.type, route)
        finally:
            call.cancel()

    def _apply(self, event_type: int, route: Route) -> None:
        self._missing.pop(route.sandbox_id, None)
        if event_type in _GONE or route.state == pb.SANDBOX_STATE_ENDED:
            self._directory.remove(route.sandbox_id)
            self.on_gone(route.sandbox_id)
        else:
            self._directory.put(route)

    # --- the fallback read ----------------------------------------------------------------

    def known_missing(self, sandbox_id: str) -> bool:
        return sandbox_id in self._missing

    async def fetch(self, sandbox_id: str) -> Route | None:
        """Ask lifecycle about an id the directory lacks; None if it does not exist.

        Raises Unavailable / DeadlineExceeded when lifecycle cannot answer.
        """
        if sandbox_id in self._missing:
            return None
        pending = self._inflight.get(sandbox_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Route | None] = asyncio.get_running_loop().create_future()
        self._inflight[sandbox_id] = future
        try:
            route = await self._get(sandbox_id)
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: waiters re-raise it, nobody logs it as lost
            raise
        else:
            future.set_result(route)
            return route
        finally:
            del self._inflight[sandbox_id]

    async def _get(self, sandbox_id: str) -> Route | None:
        try:
            reply = await self._stub.GetSandbox(
                pb.GetSandboxRequest(sandbox_id=sandbox_id),
                timeout=self._settings.lookup_timeout_s,
                metadata=ALL_TENANTS_METADATA,
            )
        except grpc.aio.AioRpcError as error:
            code = error.code()
            # An id lifecycle calls malformed names no sandbox: E2B answers "not found".
            if code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                self._missing[sandbox_id] = True
                return None
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise DeadlineExceeded("the sandbox directory did not answer in time") from error
            raise Unavailable("the sandbox directory is unavailable") from error
        route = route_from_proto(reply.sandbox)
        if route.state == pb.SANDBOX_STATE_ENDED:
            self._missing[sandbox_id] = True
            return None
        self._directory.put(route)
        return route
