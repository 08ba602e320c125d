"""The routing directory fed by the cluster (`--directory-source kubernetes`).

extproc.k8s.directory joins Sandboxes and Pods and tells this feed when a sandbox's endpoint
changes; the feed turns each into a Route (token digest decoded, end time parsed: all on the
event, none per request) and puts running ones in the same Directory the lifecycle feed fills,
so SandboxDecider and the Check are the same code in both modes.

A miss: there is no cheap synchronous read by id. A Sandbox's namespace is not derivable
from the id, and a cluster-wide label-selected LIST per unknown id would let a flood of random
ids hammer the API server. What a miss does cover is the watch lag right after a create (the
lifecycle service returns once the pod is Ready, and the client may connect before our pod
watch shows it). So a miss waits up to `miss_wait_s` for the informers to publish the id as
running, concurrent misses for one id sharing one wait; an id still unknown afterwards is
remembered as missing for `negative_ttl_s`, and a deleted Sandbox is remembered at once. A
Sandbox that exists but has no Ready pod is kept out of the directory, so it is a miss too:
it waits, then gets 502 "not found", as E2B answers for a sandbox that is not running.

While the informers are disconnected a miss is not waited on: the answer is 503
(directory unavailable) for unknown ids, and known sandboxes keep being routed from the
cache (fail static, see server.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from cachetools import TTLCache

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc.core.errors import Unavailable
from extproc.edge.routes import Directory, Route
from extproc.edge.settings import DirectorySettings

# Types only: this module is imported in every mode, the Kubernetes client only in this one.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from extproc.k8s.directory import SandboxEndpoint, SandboxInformers

log = logging.getLogger(__name__)


def route_from_endpoint(endpoint: SandboxEndpoint) -> Route:
    running = bool(endpoint.pod_ip)
    return Route(
        sandbox_id=endpoint.sandbox_id,
        endpoint_host=endpoint.pod_ip,
        tenant=endpoint.namespace,
        state=pb.SANDBOX_STATE_RUNNING if running else pb.SANDBOX_STATE_STARTING,
        envd_access_token="",
        secure=bool(endpoint.access_token_sha256),
        end_at=endpoint.end_at,
        access_token_sha256=endpoint.access_token_sha256,
    )


class ClusterDirectoryFeed:
    """An EndpointSink filling `directory`; the DirectoryFeed interface the edge uses."""

    def __init__(
        self,
        directory: Directory,
        settings: DirectorySettings,
        miss_wait_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._directory = directory
        self._miss_wait_s = miss_wait_s
        self._missing: TTLCache[str, bool] = TTLCache(
            maxsize=settings.negative_max, ttl=settings.negative_ttl_s, timer=clock
        )
        # ids with a Sandbox but no Ready pod: a miss on them is never cached
        self._pending: set[str] = set()
        self._waiters: dict[str, asyncio.Future[Route]] = {}
        self.informers: SandboxInformers | None = None
        self.on_gone: Callable[[str], None] = lambda _sandbox_id: None

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
        if route.running:
            self._pending.discard(sandbox_id)
            self._directory.put(route)
            waiter = self._waiters.pop(sandbox_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(route)
        else:
            self._pending.add(sandbox_id)
            self._directory.remove(sandbox_id)

    def gone(self, sandbox_id: str) -> None:
        self._pending.discard(sandbox_id)
        self._directory.remove(sandbox_id)
        self._missing[sandbox_id] = True
        self.on_gone(sandbox_id)

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
        waiter = self._waiters.get(sandbox_id)
        if waiter is None:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters[sandbox_id] = waiter
        try:
            async with asyncio.timeout(self._miss_wait_s):
                return await asyncio.shield(waiter)
        except TimeoutError:
            # Other waiters on this future time out on their own clocks; it is never resolved.
            if self._waiters.get(sandbox_id) is waiter:
                del self._waiters[sandbox_id]
            if sandbox_id not in self._pending:
                self._missing[sandbox_id] = True
            return None
