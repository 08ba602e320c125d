"""ADS for Envoy: the RouteConfiguration with the fast routes (RDS) and the runtime layer
that switches single fast routes off (RTDS), state of the world, on the edge's gRPC server.

Envoy holds what it last applied until the edge sends something newer, including while no
stream is open, so the server keeps track of what each Envoy may be serving: per stream,
the routes it acknowledged and the ones still in flight, and the same for a stream that
closed (an Envoy that lost its edge keeps its routes). A sandbox is *gated* while any of
those holds a fast route for it that the directory no longer backs (killed, paused, expired,
a new address or token): its runtime key goes to 0 in the next RTDS push, a few hundred
bytes that land in milliseconds, where removing the route itself means resending all of them.
The gate lifts once every route Envoy may hold for it matches the directory again.

`landed(id)` is what a platform call that changed a sandbox awaits before answering: true once
no Envoy on a live stream can serve a stale fast route for it (its gate acknowledged, or
nothing stale anywhere). With no stream there is nothing to wait for and nothing to push.

One RDS and one RTDS response are in flight per stream at a time: at 10 000 sandboxes Envoy
takes about a second to apply a RouteConfiguration, and queueing several would only delay
the newest. Newer state waits and goes out whole when the previous one is answered. A new
stream gets the runtime layer at once and the routes once the directory has synced (an Envoy
that reconnects with a runtime layer applied: the routes first, see `_next`); Envoy starts
serving only then (the bootstrap waits for both without a timeout), so it never serves
routes from a half-read directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from envoy.service.discovery.v3 import ads_pb2_grpc
from envoy.service.discovery.v3 import discovery_pb2 as discovery
from envoy.service.runtime.v3 import rtds_pb2

from extproc.core.xds_contract import (
    GATE_KEY_PREFIX,
    ROUTE_CONFIG,
    ROUTES_TYPE_URL,
    RUNTIME_LAYER,
    RUNTIME_TYPE_URL,
)
from extproc.edge.metrics import EdgeMetrics
from extproc.edge.xds_routes import FastRoute

log = logging.getLogger(__name__)

Contents = Mapping[str, FastRoute]
_TYPES = (RUNTIME_TYPE_URL, ROUTES_TYPE_URL)  # runtime first: gates before routes
_SHORT = {ROUTES_TYPE_URL: "rds", RUNTIME_TYPE_URL: "rtds"}
# Route sets of closed streams remembered (one Envoy per gateway: its last two).
_ORPHANS_KEPT = 4


@dataclass(slots=True)
class _Version:
    number: int
    response: discovery.DiscoveryResponse
    # routes: the fast routes in it; runtime: the gated sandboxes
    contents: Contents
    gates: frozenset[str] = frozenset()


@dataclass(eq=False, slots=True)
class _Stream:
    """One Envoy's ADS stream: what it subscribed to, has in flight and has acknowledged."""

    wake: asyncio.Event = field(default_factory=asyncio.Event)
    subscribed: set[str] = field(default_factory=set)
    sent: dict[str, int] = field(default_factory=dict)  # type -> last version sent
    in_flight: dict[str, tuple[_Version, float]] = field(default_factory=dict)
    routes: Contents | None = None  # acknowledged
    holds_runtime: bool = False  # came with a runtime layer applied before
    gates: frozenset[str] = frozenset()  # acknowledged

    def serves(self, sandbox_id: str, route: FastRoute) -> bool:
        if self.routes is None or self.routes.get(sandbox_id) != route:
            return False
        gating = self.in_flight.get(RUNTIME_TYPE_URL)
        return sandbox_id not in self.gates and (
            gating is None or sandbox_id not in gating[0].gates
        )

    def possible(self) -> Iterable[Contents]:
        """The fast routes this Envoy may be serving."""
        if self.routes is not None:
            yield self.routes
        pending = self.in_flight.get(ROUTES_TYPE_URL)
        if pending is not None:
            yield pending[0].contents


class XdsServer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    def __init__(
        self, metrics: EdgeMetrics, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self._metrics = metrics
        self._clock = clock
        self._desired: dict[str, FastRoute] = {}
        self._routes: _Version | None = None
        self._runtime = self._runtime_version(1, frozenset())
        self._streams: set[_Stream] = set()
        # What closed streams' Envoys may still serve, until a new stream takes over.
        self._orphans: list[Contents] = []
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._closing = False
        # Set while an Envoy is connected: only then is there anyone to build routes for (with
        # several edges, Envoy's one stream goes to one of them).
        self.connected = asyncio.Event()

    def close(self) -> None:
        """End every stream (the edge is stopping; Envoy keeps its routes and reconnects)."""
        self._closing = True
        self._wake_all()

    # --- what the fast path publishes ----------------------------------------------------

    def set_desired(self, sandbox_id: str, route: FastRoute | None) -> None:
        """The directory's current fast route for one sandbox (None: it gets none)."""
        if route is None:
            self._desired.pop(sandbox_id, None)
        else:
            self._desired[sandbox_id] = route
        stale = any(contents.get(sandbox_id, route) != route for contents in self._possible())
        gates = self._runtime.gates
        if stale != (sandbox_id in gates):
            self._set_gates(gates | {sandbox_id} if stale else gates - {sandbox_id})
        self._wake_waiters()

    def set_routes(self, config: bytes, contents: Contents) -> None:
        """A new RouteConfiguration (serialized) holding fast routes for `contents`."""
        number = self._routes.number + 1 if self._routes is not None else 1
        response = discovery.DiscoveryResponse(
            version_info=str(number), type_url=ROUTES_TYPE_URL, nonce=f"rds-{number}"
        )
        resource = response.resources.add()
        resource.type_url = ROUTES_TYPE_URL
        resource.value = config
        self._routes = _Version(number, response, dict(contents))
        self._metrics.xds_bytes.labels("rds").set(len(config))
        self._wake_all()

    @property
    def gated(self) -> frozenset[str]:
        return self._runtime.gates

    def serving(self, sandbox_id: str) -> bool:
        """Whether an Envoy on a live stream has applied the sandbox's current fast route and
        cannot have it switched off."""
        route = self._desired.get(sandbox_id)
        return route is not None and any(
            stream.serves(sandbox_id, route) for stream in self._streams
        )

    @property
    def streams(self) -> int:
        return len(self._streams)

    # --- gates ---------------------------------------------------------------------------

    def _possible(self) -> Iterable[Contents]:
        for stream in self._streams:
            yield from stream.possible()
        yield from self._orphans

    def _regate(self) -> None:
        """Recompute the whole gated set (what Envoy may hold changed)."""
        desired = self._desired
        self._set_gates(
            frozenset(
                sandbox_id
                for contents in self._possible()
                for sandbox_id, route in contents.items()
                if desired.get(sandbox_id) != route
            )
        )
        self._wake_waiters()

    def _set_gates(self, gates: frozenset[str]) -> None:
        """Push a runtime layer when the gated set changed."""
        if gates != self._runtime.gates:
            self._runtime = self._runtime_version(self._runtime.number + 1, gates)
            self._wake_all()

    @staticmethod
    def _runtime_version(number: int, gates: frozenset[str]) -> _Version:
        layer = rtds_pb2.Runtime(name=RUNTIME_LAYER)
        for sandbox_id in gates:
            layer.layer.fields[GATE_KEY_PREFIX + sandbox_id].number_value = 0
        response = discovery.DiscoveryResponse(
            version_info=str(number), type_url=RUNTIME_TYPE_URL, nonce=f"rtds-{number}"
        )
        response.resources.add().Pack(layer)
        return _Version(number, response, {}, gates)

    def _safe(self, sandbox_id: str) -> bool:
        if sandbox_id not in self._runtime.gates:
            return True
        return all(sandbox_id in stream.gates for stream in self._streams)

    async def landed(self, sandbox_id: str, timeout_s: float) -> bool:
        """Wait until no Envoy on a live stream can serve a stale fast route for the sandbox;
        False after `timeout_s` without that."""
        if self._safe(sandbox_id):
            return True
        started = self._clock()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(sandbox_id, []).append(future)
        try:
            async with asyncio.timeout(timeout_s):
                await future
        except TimeoutError:
            log.warning(
                "Envoy did not apply the change of sandbox %s within %.1fs", sandbox_id, timeout_s
            )
            return False
        finally:
            waiting = self._waiters.get(sandbox_id, [])
            if future in waiting:
                waiting.remove(future)
            if not waiting:
                self._waiters.pop(sandbox_id, None)
        self._metrics.xds_landed_seconds.observe(self._clock() - started)
        return True

    def _wake_waiters(self) -> None:
        for sandbox_id in [key for key in self._waiters if self._safe(key)]:
            for future in self._waiters.pop(sandbox_id):
                if not future.done():
                    future.set_result(None)

    def _wake_all(self) -> None:
        for stream in self._streams:
            stream.wake.set()

    # --- the stream ------------------------------------------------------------------------

    async def StreamAggregatedResources(
        self, requests: AsyncIterator[discovery.DiscoveryRequest], context: Any
    ) -> AsyncIterator[discovery.DiscoveryResponse]:
        stream = _Stream()
        self._streams.add(stream)
        self.connected.set()
        reader = asyncio.create_task(self._read(stream, requests), name="edge-xds-read")
        log.info("Envoy opened an xDS stream (%d open)", len(self._streams))
        try:
            while not reader.done() and not self._closing:
                response = self._next(stream)
                if response is None:
                    stream.wake.clear()
                    waiting = asyncio.ensure_future(stream.wake.wait())
                    try:
                        await asyncio.wait((waiting, reader), return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        waiting.cancel()
                    continue
                yield response
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            self._closed(stream)

    def _next(self, stream: _Stream) -> discovery.DiscoveryResponse | None:
        # An Envoy that already has a runtime layer gets the routes first on a new stream:
        # this edge (just started, say) knows nothing of the gates it may hold from an edge
        # before, and would lift them before routes without those sandboxes replaced the
        # old ones. An Envoy starting up needs the runtime layer first (before its listener
        # even asks for routes).
        held = stream.holds_runtime and ROUTES_TYPE_URL not in stream.sent
        for type_url in (ROUTES_TYPE_URL,) if held else _TYPES:
            if type_url not in stream.subscribed or type_url in stream.in_flight:
                continue
            version = self._runtime if type_url == RUNTIME_TYPE_URL else self._routes
            if version is None or stream.sent.get(type_url) == version.number:
                continue
            stream.sent[type_url] = version.number
            stream.in_flight[type_url] = (version, self._clock())
            self._metrics.xds_pushes.labels(_SHORT[type_url]).inc()
            if type_url == ROUTES_TYPE_URL:
                self._regate()  # the routes may hold sandboxes the directory dropped since
            return version.response
        return None

    async def _read(
        self, stream: _Stream, requests: AsyncIterator[discovery.DiscoveryRequest]
    ) -> None:
        async for request in requests:
            type_url = request.type_url
            if type_url not in _SHORT:
                continue
            if not request.response_nonce:
                # a subscription (Envoy sends one per type when the stream opens)
                wanted = ROUTE_CONFIG if type_url == ROUTES_TYPE_URL else RUNTIME_LAYER
                if request.resource_names and wanted not in request.resource_names:
                    log.warning("Envoy asked for %s %s", type_url, list(request.resource_names))
                stream.subscribed.add(type_url)
                stream.sent.pop(type_url, None)
                if type_url == RUNTIME_TYPE_URL and request.version_info:
                    stream.holds_runtime = True
                stream.wake.set()
                continue
            pending = stream.in_flight.get(type_url)
            if pending is None or request.response_nonce != pending[0].response.nonce:
                continue  # an answer to something older
            del stream.in_flight[type_url]
            version, sent_at = pending
            self._answered(stream, type_url, version, request, self._clock() - sent_at)
            stream.wake.set()

    def _answered(
        self,
        stream: _Stream,
        type_url: str,
        version: _Version,
        request: discovery.DiscoveryRequest,
        seconds: float,
    ) -> None:
        short = _SHORT[type_url]
        if request.HasField("error_detail"):
            self._metrics.xds_rejections.labels(short).inc()
            log.error(
                "Envoy rejected %s version %d: %s",
                short,
                version.number,
                request.error_detail.message,
            )
        else:
            self._metrics.xds_apply_seconds.labels(short).observe(seconds)
            if type_url == ROUTES_TYPE_URL:
                stream.routes = version.contents
                self._orphans.clear()  # this Envoy holds the current routes now
            else:
                stream.gates = version.gates
        self._regate()

    def _closed(self, stream: _Stream) -> None:
        self._streams.discard(stream)
        if not self._streams:
            self.connected.clear()
        self._orphans.extend(stream.possible())
        del self._orphans[:-_ORPHANS_KEPT]
        log.info("an xDS stream closed (%d open)", len(self._streams))
        self._regate()
