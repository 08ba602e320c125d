"""The fast path: requests for running sandboxes served by Envoy alone, kept in step with the
routing directory.

A sandbox gets a fast route (xds_routes.py) while the directory holds it as running with an
address, its end more than `expiry_margin_s` away, in local mode (the Kubernetes directory
holds only token digests, which Envoy cannot compare a header with, so it has no fast path).
Everything else, and every request a fast route does not match exactly, is the Check's.

The invariant: while Envoy hears from the edge, it serves no fast route the directory does
not back. The directory
tells its observers of each change synchronously, and a change that takes a sandbox's route
away (kill, pause, expiry, a new address or token) switches it off in Envoy at once through
the runtime layer (xds_server.py, a small push), before the routes are rebuilt without it.
Expiry is a timer at `end_at - expiry_margin_s`. Additions and JWT renewals only rebuild
routes: until they land the Check answers, which is always right, only slower.

Routes are rebuilt after `coalesce_s` of quiet, so a burst of creates is one push, and the
server sends the newest routes whenever Envoy has answered the previous ones. Only while an
Envoy is connected: with several edges, the one holding Envoy's stream does the work.

JWTs are signed before a sandbox's route is added and again once `refresh_fraction` of their
lifetime has passed, in batches off the event loop; a re-signed JWT also serves the Checks.
At 10 000 sandboxes that is 10 000 RSA signatures per JWT lifetime (1-3 ms each on this
project's 2-core machine: 3-10 % of a core with the default 300 s) and pushes of about 30 MB
(docs/benchmarks.md).

While Envoy cannot hear from the edge (the edge restarting, say) it keeps the routes it has:
a sandbox killed meanwhile keeps its fast route until a new stream brings the full state.
Such a route leads to a dead address, or to a new sandbox at the same address whose picod
refuses the old sandbox's JWT (`session_id`) and token; and its JWT expires within
`--jwt-lifetime` anyway.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from extproc.core.hosts import ENVD_PORT
from extproc.edge.sandbox_directory import Directory, Route
from extproc.edge.settings import FastPathSettings
from extproc.edge.tokens import TokenSigner
from extproc.edge.xds_routes import FastRoute, FastRoutes, Leaf
from extproc.edge.xds_server import XdsServer

log = logging.getLogger(__name__)

# Leaves built between two yields to the event loop (a leaf costs 0.1-0.3 ms).
_LEAVES_PER_SLICE = 200
# While a long signing run (a start with many sandboxes) goes on, push at most this often.
_PUBLISH_EVERY_S = 0.25
# Renewals due within this fraction of a lifetime of each other go out in one push.
_RENEWAL_SLACK = 0.1


def fast_route_of(route: Route, now: float, margin_s: float) -> FastRoute | None:
    """The fast route `route` earns, or None when every request for it must be checked."""
    if not route.running or route.open_ports is not None or route.access_token_sha256:
        return None
    if route.end_at and route.end_at - margin_s <= now:
        return None
    token = route.envd_access_token if route.secure else ""
    return FastRoute(f"{route.endpoint_host}:{ENVD_PORT}", token)


@dataclass(eq=False, repr=False)
class FastPath:
    directory: Directory
    signer: TokenSigner
    routes: FastRoutes
    server: XdsServer
    settings: FastPathSettings
    clock: Callable[[], float] = time.time
    _desired: dict[str, FastRoute] = field(init=False, default_factory=dict)
    _jwts: dict[str, tuple[str, int]] = field(init=False, default_factory=dict)  # token, exp
    _leaves: dict[str, Leaf] = field(init=False, default_factory=dict)
    # The routes last published differ from what they should be.
    _stale: bool = field(init=False, default=True)
    _wake: asyncio.Event = field(init=False, default_factory=asyncio.Event)
    # (end_at - margin, id): checked lazily against the directory when due
    _ends: list[tuple[float, str]] = field(init=False, default_factory=list)
    _end_of: dict[str, float] = field(init=False, default_factory=dict)
    _timer: asyncio.TimerHandle | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.directory.observe(self._changed)

    def __len__(self) -> int:
        return len(self._leaves)

    # --- the directory changed ---------------------------------------------------------------

    def _changed(self, sandbox_id: str | None) -> None:
        now = self.clock()
        if sandbox_id is None:
            for each in {*self.directory.ids(), *self._desired}:
                self._reconsider(each, now)
        else:
            self._reconsider(sandbox_id, now)
        self._arm()
        self._wake.set()

    def _reconsider(self, sandbox_id: str, now: float) -> None:
        route = self.directory.get(sandbox_id)
        wanted = None if route is None else fast_route_of(route, now, self._margin)
        if wanted is not None and route is not None and route.end_at:
            deadline = route.end_at - self._margin
            if self._end_of.get(sandbox_id) != deadline:
                self._end_of[sandbox_id] = deadline
                heapq.heappush(self._ends, (deadline, sandbox_id))
        elif wanted is None:
            self._end_of.pop(sandbox_id, None)
        if wanted == self._desired.get(sandbox_id):
            return
        if wanted is None:
            del self._desired[sandbox_id]
            self._jwts.pop(sandbox_id, None)
        else:
            self._desired[sandbox_id] = wanted
        self._leaves.pop(sandbox_id, None)
        self.server.set_desired(sandbox_id, wanted)  # a stale route goes off now
        self._stale = True

    @property
    def _margin(self) -> float:
        return self.settings.expiry_margin_s

    def _arm(self) -> None:
        """Run `_expire` when the earliest fast route must go."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._ends:
            delay = max(0.0, self._ends[0][0] - self.clock())
            self._timer = asyncio.get_running_loop().call_later(delay, self._expire)

    def _expire(self) -> None:
        self._timer = None
        now = self.clock()
        while self._ends and self._ends[0][0] <= now:
            _, sandbox_id = heapq.heappop(self._ends)
            self._reconsider(sandbox_id, now)
        self._arm()
        self._wake.set()

    # --- routes and JWTs -------------------------------------------------------------------

    async def run(self, synced: asyncio.Event) -> None:
        """Keep Envoy's routes current, forever: from when the directory has synced."""
        await synced.wait()
        self._changed(None)
        log.info("fast path: %d running sandboxes to serve from Envoy", len(self._desired))
        lifetime = self.signer.lifetime_s
        renew_before = lifetime * (1 - self.settings.refresh_fraction)
        while True:
            await self.server.connected.wait()  # an edge Envoy does not talk to signs nothing
            await self._sign(renew_before + lifetime * _RENEWAL_SLACK)
            await self._publish()
            now = self.clock()
            renewals = [exp - renew_before for _, exp in self._jwts.values()]
            wait = min(renewals, default=now + lifetime) - now
            try:
                async with asyncio.timeout(max(wait, 0.0)):
                    await self._wake.wait()
            except TimeoutError:
                continue  # renewals are due
            self._wake.clear()
            await asyncio.sleep(self.settings.coalesce_s)  # let a burst gather

    async def _sign(self, renew_within_s: float) -> None:
        """JWTs for new fast routes and for those due for renewal, a batch at a time."""
        now = self.clock()
        due = [
            sandbox_id
            for sandbox_id in self._desired
            if (jwt := self._jwts.get(sandbox_id)) is None or jwt[1] - now <= renew_within_s
        ]
        last_push = 0.0
        size = self.settings.sign_batch
        for start in range(0, len(due), size):
            batch = due[start : start + size]
            signed = await asyncio.to_thread(self._issue, batch, now)
            for sandbox_id, token, exp in signed:
                if sandbox_id in self._desired:  # not dropped while signing
                    self._jwts[sandbox_id] = (token, exp)
                    self.signer.remember(sandbox_id, token, exp)
                    self._leaves.pop(sandbox_id, None)
                    self._stale = True
            if start + size < len(due) and time.perf_counter() - last_push >= _PUBLISH_EVERY_S:
                await self._publish()  # the first routes need not wait for the last JWT
                last_push = time.perf_counter()

    def _issue(self, batch: list[str], now: float) -> list[tuple[str, str, int]]:
        return [(sandbox_id, *self.signer.issue(sandbox_id, now)) for sandbox_id in batch]

    async def _publish(self) -> None:
        if not self._stale:
            return
        self._stale = False  # a change while the leaves are built sets it again
        built = 0
        for sandbox_id, route in list(self._desired.items()):
            jwt = self._jwts.get(sandbox_id)
            if jwt is None or sandbox_id in self._leaves:
                continue
            self._leaves[sandbox_id] = self.routes.leaf(sandbox_id, route, jwt[0])
            built += 1
            if built % _LEAVES_PER_SLICE == 0:
                await asyncio.sleep(0)  # Checks keep being answered
        # Removals during the slices dropped their leaves; what is left is current.
        leaves = {key: leaf for key, leaf in self._leaves.items() if key in self._desired}
        contents = {key: self._desired[key] for key in leaves}
        self.server.set_routes(self.routes.assemble(leaves.values()), contents)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
