"""The routing directory fed by the cluster (`--directory-source kubernetes`).

extproc.k8s.directory joins proven Sandboxes and their Pods and tells this feed when a
sandbox's endpoint changes; the feed turns each into a Route (token digest decoded, end time
parsed: all on the event, none per request) and puts running and paused ones in the same
Directory the lifecycle feed fills, so SandboxDecider and the Check are the same code in both
modes.

A miss: there is no cheap synchronous read by id. A Sandbox's namespace is not derivable
from the id, and a cluster-wide label-selected LIST per unknown id would let a flood of random
ids hammer the API server. What a miss does cover is the watch lag right after a create (the
lifecycle service returns once the pod is Ready, and the client may connect before our pod
watch shows it). So a miss waits up to `miss_wait_s` for the informers to publish the id as
running, concurrent misses for one id sharing one wait; an id still unknown afterwards is
remembered as missing for `negative_ttl_s`, and a deleted Sandbox is remembered at once. A
Sandbox that exists but has no Ready pod (and is not paused) is kept out of the directory, so
it is a miss too: it waits, then gets 502 "not found", as E2B answers for a sandbox that is
not running.

Paused (annotation `e2b.agentcube.io/state: paused`): the route stays, marked paused, so the
Check answers E2B's "not found" or, with autoResume, resumes it. A resume here is
ResumeSandbox on the lifecycle service, then a wait until the informers show the pod Ready:
the route comes from the proven objects only, never from a lifecycle reply. While the pod
starts the Sandbox is a miss; a miss on an id whose resume is in flight joins that resume
instead of answering "not found". The platform API's replies only ever narrow a route here
(paused, a new end time, gone), for the same reason.

While the informers are disconnected a miss is not waited on: the answer is 503
(directory unavailable) for unknown ids, and known sandboxes keep being routed from the
cache (fail static, see server.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from cachetools import TTLCache

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2_grpc as pb_grpc
from extproc.core.errors import Conflict, DeadlineExceeded, NotFound, Unavailable
from extproc.edge.sandbox_directory import Directory, Route
from extproc.edge.settings import DirectorySettings
from extproc.edge.watching import RESUME_TIMEOUT_S, Resumes, request_resume

# Types only: this module is imported in every mode, the Kubernetes client only in this one.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from extproc.k8s.directory import SandboxEndpoint, SandboxInformers

log = logging.getLogger(__name__)


def route_from_endpoint(endpoint: SandboxEndpoint) -> Route:
    if endpoint.paused:
        state = pb.SANDBOX_STATE_PAUSED
    elif endpoint.pod_ip:
        state = pb.SANDBOX_STATE_RUNNING
    else:
        state = pb.SANDBOX_STATE_STARTING
    return Route(
        sandbox_id=endpoint.sandbox_id,
        endpoint_host="" if endpoint.paused else endpoint.pod_ip,
        tenant=endpoint.namespace,
        state=state,
        envd_access_token="",
        secure=bool(endpoint.access_token_sha256),
        end_at=endpoint.end_at,
        access_token_sha256=endpoint.access_token_sha256,
        auto_resume=endpoint.auto_resume,
        open_ports=endpoint.open_ports,
    )


@dataclass(slots=True)
class _Waiter:
    """Checks waiting for one id to run: resolved with its route, or None when it is gone."""

    future: asyncio.Future[Route | None]
    count: int = 0


class ClusterDirectoryFeed:
    """An EndpointSink filling `directory`; the DirectoryFeed interface the edge uses."""

    def __init__(
        self,
        directory: Directory,
        settings: DirectorySettings,
        miss_wait_s: float,
        clock: Callable[[], float] = time.monotonic,
        lifecycle: pb_grpc.SandboxServiceStub | None = None,
        resume_timeout_s: float = RESUME_TIMEOUT_S,
    ) -> None:
        self._directory = directory
        self._miss_wait_s = miss_wait_s
        self._missing: TTLCache[str, bool] = TTLCache(
            maxsize=settings.negative_max, ttl=settings.negative_ttl_s, timer=clock
        )
        # ids with a Sandbox but no Ready pod: a miss on them is never cached
        self._pending: set[str] = set()
        # id -> the route as the informers last showed it (running, paused or starting)
        self._informed: dict[str, Route] = {}
        self._waiters: dict[str, _Waiter] = {}
        self.informers: SandboxInformers | None = None
        self.on_gone: Callable[[str], None] = lambda _sandbox_id: None
        # Auto-resume asks the lifecycle service; without it (tests of the directory alone)
        # a resume fails as unavailable.
        self._lifecycle = lifecycle
        self._resume_timeout_s = resume_timeout_s
        self.resumes = Resumes(self._resume)

    def attach(self, informers: SandboxInformers) -> None:
        self.informers = informers

    @property
    def synced(self) -> asyncio.Event:
        assert self.informers is not None, "attach() the informers first"
        return self.informers.synced

    async def watch(self) -> None:
        assert self.informers is not None, "attach() the informers first"
        await self.informers.watch()

    # --- EndpointSink (called on the loop thread by the join) -----------------------------

    def put(self, endpoint: SandboxEndpoint) -> None:
        route = route_from_endpoint(endpoint)
        sandbox_id = route.sandbox_id
        self._missing.pop(sandbox_id, None)
        self._informed[sandbox_id] = route
        if route.running or route.paused:
            self._pending.discard(sandbox_id)
            self._directory.put(route)
            if route.running:
                self._wake(sandbox_id, route)
        else:
            self._pending.add(sandbox_id)
            self._directory.remove(sandbox_id)

    def gone(self, sandbox_id: str) -> None:
        self._informed.pop(sandbox_id, None)
        self._pending.discard(sandbox_id)
        self._directory.remove(sandbox_id)
        self._missing[sandbox_id] = True
        self._wake(sandbox_id, None)
        self.on_gone(sandbox_id)

    def _wake(self, sandbox_id: str, route: Route | None) -> None:
        waiter = self._waiters.pop(sandbox_id, None)
        if waiter is not None and not waiter.future.done():
            waiter.future.set_result(route)

    # --- what the platform API just did ---------------------------------------------------

    def learn(self, sandbox: pb.Sandbox) -> None:
        """Narrow the route by a lifecycle reply before the informers catch up: paused, or
        resumed (out of the directory until its pod shows Ready), or a new end time."""
        route = self._directory.get(sandbox.sandbox_id)
        if route is None or route.tenant != sandbox.tenant:
            return
        if sandbox.state == pb.SANDBOX_STATE_ENDED:
            self.forget(sandbox.sandbox_id)
            return
        if sandbox.HasField("end_at"):
            route = replace(route, end_at=sandbox.end_at.seconds + sandbox.end_at.nanos / 1e9)
        if sandbox.state == pb.SANDBOX_STATE_PAUSED and not route.paused:
            route = replace(
                route, state=pb.SANDBOX_STATE_PAUSED, endpoint_host="",
                auto_resume=sandbox.auto_resume,
            )  # fmt: skip
        elif sandbox.state == pb.SANDBOX_STATE_RUNNING and route.paused:
            # Back to what the informers show when that is a running pod (they never saw the
            # pause); else a miss, which waits for them to show the new pod Ready.
            informed = self._informed.get(sandbox.sandbox_id)
            if informed is not None and informed.running:
                route = informed
            else:
                self._pending.add(sandbox.sandbox_id)
                self._directory.remove(sandbox.sandbox_id)
                return
        self._directory.put(route)

    def forget(self, sandbox_id: str) -> None:
        """The sandbox was killed: "not found" from the very next request."""
        self._directory.remove(sandbox_id)
        self._informed.pop(sandbox_id, None)
        self._pending.discard(sandbox_id)
        self._missing[sandbox_id] = True
        self.on_gone(sandbox_id)

    # --- auto-resume ----------------------------------------------------------------------

    async def _resume(self, route: Route) -> Route | None:
        if self._lifecycle is None:
            raise Unavailable("no lifecycle service to resume the sandbox")
        sandbox_id = route.sandbox_id
        try:
            async with asyncio.timeout(self._resume_timeout_s):
                try:
                    await request_resume(self._lifecycle, route, self._resume_timeout_s)
                except NotFound:
                    return None
                except Conflict:
                    pass  # resumed already (another edge, the platform API): wait for its pod
                current = self._directory.get(sandbox_id)
                if current is not None and current.running:
                    return current
                if sandbox_id in self._missing:
                    return None
                return await self._wait_running(sandbox_id)
        except TimeoutError as error:
            raise DeadlineExceeded("the resumed sandbox's pod did not become ready") from error

    # --- the miss -------------------------------------------------------------------------

    def known_missing(self, sandbox_id: str) -> bool:
        return sandbox_id in self._missing

    async def fetch(self, sandbox_id: str) -> Route | None:
        """Wait briefly for the informers to show `sandbox_id` running; None if they do not.

        Raises Unavailable when the informers are disconnected (nothing to wait for).
        """
        if sandbox_id in self._missing:
            return None
        informers = self.informers
        if informers is not None and not informers.connected:
            raise Unavailable("the sandbox directory cannot reach the Kubernetes API")
        try:
            async with asyncio.timeout(self._miss_wait_s):
                return await self._wait_running(sandbox_id)
        except TimeoutError:
            if sandbox_id not in self._pending:
                self._missing[sandbox_id] = True
            return None

    async def _wait_running(self, sandbox_id: str) -> Route | None:
        """The route once the informers show `sandbox_id` running, None once it is gone;
        waits until cancelled (callers bound it with a timeout)."""
        waiter = self._waiters.get(sandbox_id)
        if waiter is None:
            waiter = _Waiter(asyncio.get_running_loop().create_future())
            self._waiters[sandbox_id] = waiter
        waiter.count += 1
        try:
            # shielded: one caller's timeout must not cancel the others' future
            return await asyncio.shield(waiter.future)
        finally:
            waiter.count -= 1
            if waiter.count == 0 and self._waiters.get(sandbox_id) is waiter:
                del self._waiters[sandbox_id]  # nobody waits: an id that never comes is freed
