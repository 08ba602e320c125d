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

Auto-resume: a request to a paused sandbox with autoResume asks lifecycle to ResumeSandbox
(as the sandbox's tenant) and puts the answer in the directory. One resume per sandbox runs
at a time (`Resumes`): every Check that needs it awaits the same task, each for as long as
its own deadline allows, and the task is never cancelled by a Check giving up, so the
sandbox ends up running and the client's retry is served. The platform API's replies (pause,
resume, timeouts, kill) are applied at once through `learn` / `forget`: the watch event that
follows carries the same state, so applying it again changes nothing.

That covers the edge process that served the call, not its siblings (`up` runs several, each
fed by its own watch stream). So the call is answered only once this edge's own stream has
shown the change too (`settling`, bounded by SETTLE_WAIT_S): lifecycle sends the event to every
watcher in one fan-out, so by then the siblings' copies are usually on their way. Usually:
with two edges on two busy cores, an `is_running()` right after `pause()` still reached a
sibling that routed it to the stopped daemon 6 times in 100 (14 in 100 without the wait).
Only lifecycle can close that window, by replying after every watcher's stream has sent the
event (docs/architecture.md, "State changes").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator

import grpc
from cachetools import TTLCache

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2_grpc as pb_grpc
from extproc.core.caller_token import ALL_TENANTS_METADATA
from extproc.core.errors import Conflict, DeadlineExceeded, NotFound, Unavailable
from extproc.core.single_flight import SingleFlight
from extproc.edge.sandbox_directory import Directory, Route, route_from_proto
from extproc.edge.settings import DirectorySettings

log = logging.getLogger(__name__)

_GONE = (
    pb.SANDBOX_EVENT_TYPE_KILLED,
    pb.SANDBOX_EVENT_TYPE_EXPIRED,
    pb.SANDBOX_EVENT_TYPE_DIED,
)


# Seconds a background ResumeSandbox may take; Checks wait far less (see authz.py), the
# resume itself runs on so that a retry finds the sandbox running. Default 60.
RESUME_TIMEOUT_S = 60.0
# Not paused (any more): another edge, the platform API or a concurrent resume got there.
_NOT_PAUSED = (
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.ALREADY_EXISTS,
)


# Seconds a platform call that changed a sandbox waits for this edge's watch stream to show the
# change before answering (`Settling`); normally the event is there first. Default 0.5.
SETTLE_WAIT_S = 0.5


class _Resync(Exception):
    """The stream skipped a revision; start over from a new snapshot."""


class Settling:
    """What this edge's watch stream showed of one sandbox while a platform call ran.

    `before` is the sandbox's route when the call began (None: not in the directory);
    `live` says whether the stream was following changes then (a broken or unsynced stream
    shows nothing, so there is nothing to wait for).
    """

    def __init__(
        self,
        sandbox_id: str,
        before: Route | None,
        live: bool,
        landed: Callable[[str], Awaitable[object]] | None = None,
    ) -> None:
        self.sandbox_id = sandbox_id
        self._before = before
        self._live = live
        # the fast path: until Envoy can no longer serve the sandbox's old fast route
        self._landed = landed
        self._seen: list[Route | None] = []
        self._changed = asyncio.Event()

    def saw(self, route: Route | None) -> None:
        """The stream applied `route` (None: the sandbox is gone)."""
        self._seen.append(route)
        self._changed.set()

    async def until_shows(self, expected: Route | None) -> bool:
        """Wait until the stream has shown `expected`'s state and end time (None: gone), or
        had it already before the call, and Envoy has dropped what the change made stale;
        False after SETTLE_WAIT_S without the stream showing it."""
        shown = await self._shown(expected)
        if self._landed is not None:
            await self._landed(self.sandbox_id)
        return shown

    async def _shown(self, expected: Route | None) -> bool:
        if not self._live or _same(self._before, expected):
            return True
        try:
            async with asyncio.timeout(SETTLE_WAIT_S):
                while not any(_same(route, expected) for route in self._seen):
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            log.info(
                "the watch did not show sandbox %s's change within %.1fs; answering anyway",
                self.sandbox_id,
                SETTLE_WAIT_S,
            )
            return False
        return True


def _same(route: Route | None, expected: Route | None) -> bool:
    if route is None or expected is None:
        return route is expected
    return route.state == expected.state and route.end_at == expected.end_at


@contextlib.contextmanager
def unsettled(sandbox_id: str) -> Iterator[Settling]:
    """A Settling that never waits: for a feed without a lifecycle watch stream."""
    yield Settling(sandbox_id, None, live=False)


class Resumes:
    """The resume in flight for each sandbox: one task per id, shared by every Check.

    `run(route)` resumes the sandbox and returns its route once it is running (None when the
    sandbox turned out not to exist). A Check awaits the task through `asyncio.shield`, so
    its deadline never cancels the resume; `close` does, when the edge stops.
    """

    def __init__(self, run: Callable[[Route], Awaitable[Route | None]]) -> None:
        self._run = run
        self._tasks: dict[str, asyncio.Task[Route | None]] = {}

    def get(self, sandbox_id: str) -> asyncio.Task[Route | None] | None:
        return self._tasks.get(sandbox_id)

    def start(self, route: Route) -> asyncio.Task[Route | None]:
        """The running resume of `route`'s sandbox, or a new one."""
        sandbox_id = route.sandbox_id
        task = self._tasks.get(sandbox_id)
        if task is None:
            task = asyncio.create_task(self._logged(route), name=f"edge-resume-{sandbox_id}")
            self._tasks[sandbox_id] = task
            task.add_done_callback(lambda done: self._finished(sandbox_id, done))
        return task

    async def _logged(self, route: Route) -> Route | None:
        try:
            return await self._run(route)
        except (DeadlineExceeded, Unavailable) as error:
            log.warning("auto-resume of sandbox %s failed: %s", route.sandbox_id, error.message)
            raise

    def _finished(self, sandbox_id: str, task: asyncio.Task[Route | None]) -> None:
        if self._tasks.get(sandbox_id) is task:
            del self._tasks[sandbox_id]
        if not task.cancelled():
            task.exception()  # retrieved: Checks that gave up waiting never will

    async def close(self) -> None:
        """Cancel every resume in flight and wait for them to end (the edge is stopping)."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def request_resume(
    stub: pb_grpc.SandboxServiceStub, route: Route, timeout_s: float
) -> pb.Sandbox:
    """ResumeSandbox as the route's tenant: the resumed sandbox.

    NotFound when it no longer exists, Conflict when it is not paused (any more),
    DeadlineExceeded / Unavailable when lifecycle cannot answer.
    """
    request = pb.ResumeSandboxRequest(sandbox_id=route.sandbox_id, tenant=route.tenant)
    try:
        reply = await stub.ResumeSandbox(request, timeout=timeout_s)
    except grpc.aio.AioRpcError as error:
        code = error.code()
        if code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
            raise NotFound(f"sandbox {route.sandbox_id} not found") from error
        if code in _NOT_PAUSED:
            raise Conflict(f"sandbox {route.sandbox_id} is not paused") from error
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise DeadlineExceeded("lifecycle did not resume the sandbox in time") from error
        raise Unavailable(f"lifecycle could not resume the sandbox ({code.name})") from error
    sandbox: pb.Sandbox = reply.sandbox
    return sandbox


class DirectoryFeed:
    def __init__(
        self,
        stub: pb_grpc.SandboxServiceStub,
        directory: Directory,
        settings: DirectorySettings,
        clock: Callable[[], float] = time.monotonic,
        resume_timeout_s: float = RESUME_TIMEOUT_S,
    ) -> None:
        self._stub = stub
        self._directory = directory
        self._settings = settings
        self.synced = asyncio.Event()
        self._missing: TTLCache[str, bool] = TTLCache(
            maxsize=settings.negative_max, ttl=settings.negative_ttl_s, timer=clock
        )
        self._lookups: SingleFlight[str, Route | None] = SingleFlight()
        self.on_gone: Callable[[str], None] = lambda _sandbox_id: None
        self._resume_timeout_s = resume_timeout_s
        self.resumes = Resumes(self._resume)
        # True between SYNCED and the stream breaking: changes reach us as they happen.
        self._live = False
        self._settlings: dict[str, list[Settling]] = {}
        # The fast path's wait for Envoy, added to every settling (server.py sets it).
        self.landed: Callable[[str], Awaitable[object]] | None = None

    # --- the stream ---------------------------------------------------------------------

    async def watch(self) -> None:
        """Follow WatchSandboxes forever, reconnecting with backoff."""
        failures = 0
        while True:
            delay = self._settings.backoff.delay(failures)
            try:
                await self._follow_once()
            except (grpc.aio.AioRpcError, _Resync) as error:
                reason = error.code().name if isinstance(error, grpc.aio.AioRpcError) else "gap"
                log.warning("sandbox watch broke (%s); re-watching in %.1fs", reason, delay)
            else:
                log.warning("sandbox watch ended; re-watching in %.1fs", delay)
            await asyncio.sleep(delay)
            failures = 0 if self.synced.is_set() else failures + 1

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
                        for sandbox_id, settlings in self._settlings.items():
                            for settling in settlings:
                                settling.saw(snapshot.get(sandbox_id))
                        snapshot = None
                        log.info("sandbox directory synced: %d sandboxes", len(self._directory))
                        self._live = True
                        self.synced.set()
                    continue
                route = route_from_proto(event.sandbox)
                if snapshot is not None:
                    if route.state != pb.SANDBOX_STATE_ENDED:
                        snapshot[route.sandbox_id] = route
                    continue
                gone = self._apply(event.type, route)
                for settling in self._settlings.get(route.sandbox_id, ()):
                    settling.saw(None if gone else route)
        finally:
            self._live = False
            call.cancel()

    def _apply(self, event_type: int, route: Route) -> bool:
        """Put `route` in the directory, or take it out: True when the sandbox is gone."""
        self._missing.pop(route.sandbox_id, None)
        if event_type in _GONE or route.state == pb.SANDBOX_STATE_ENDED:
            self._directory.remove(route.sandbox_id)
            self.on_gone(route.sandbox_id)
            return True
        self._directory.put(route)
        return False

    # --- what the platform API just did ---------------------------------------------------

    def learn(self, sandbox: pb.Sandbox) -> None:
        """Apply a lifecycle reply (pause, resume, new timeout) before its watch event."""
        self._apply(pb.SANDBOX_EVENT_TYPE_UPDATED, route_from_proto(sandbox))

    def forget(self, sandbox_id: str) -> None:
        """The sandbox was killed: "not found" from the very next request."""
        self._directory.remove(sandbox_id)
        self._missing[sandbox_id] = True
        self.on_gone(sandbox_id)

    @contextlib.contextmanager
    def settling(self, sandbox_id: str) -> Iterator[Settling]:
        """Record what the stream shows of `sandbox_id` while a platform call that may change
        it runs; enter before the call, so an event that beats the reply is seen too."""
        settling = Settling(
            sandbox_id, self._directory.get(sandbox_id), self._live, landed=self.landed
        )
        settlings = self._settlings.setdefault(sandbox_id, [])
        settlings.append(settling)
        try:
            yield settling
        finally:
            settlings.remove(settling)
            if not settlings:
                del self._settlings[sandbox_id]

    # --- auto-resume ----------------------------------------------------------------------

    async def _resume(self, route: Route) -> Route | None:
        started = time.perf_counter()
        try:
            sandbox = await request_resume(self._stub, route, self._resume_timeout_s)
        except NotFound:
            self.forget(route.sandbox_id)
            return None
        except Conflict:
            # Resumed by someone else meanwhile: what is it now?
            return await self._get(route.sandbox_id)
        resumed = route_from_proto(sandbox)
        self._apply(pb.SANDBOX_EVENT_TYPE_UPDATED, resumed)
        elapsed_ms = (time.perf_counter() - started) * 1000
        log.info("auto-resumed sandbox %s on traffic in %.0f ms", route.sandbox_id, elapsed_ms)
        return None if resumed.state == pb.SANDBOX_STATE_ENDED else resumed

    # --- the fallback read ----------------------------------------------------------------

    def known_missing(self, sandbox_id: str) -> bool:
        return sandbox_id in self._missing

    async def fetch(self, sandbox_id: str) -> Route | None:
        """Ask lifecycle about an id the directory lacks; None if it does not exist.

        Raises Unavailable / DeadlineExceeded when lifecycle cannot answer.
        """
        if sandbox_id in self._missing:
            return None
        return await self._lookups.run(sandbox_id, lambda: self._get(sandbox_id))

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
