"""Prometheus metrics of one edge process, on its own registry (no module globals).

Served by a tiny asyncio HTTP responder instead of prometheus_client's threaded server, so
the process stays single-threaded async and stops with the other tasks, and so it can listen
on a unix socket (made 0600, as `up` does) as well as on TCP. Prometheus itself scrapes only
TCP: an operator who scrapes the edge gives it `--metrics-listen HOST:PORT`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from extproc.core.addresses import HostPort
from extproc.core.flags import unix_socket_path

log = logging.getLogger(__name__)

# Check takes tens of microseconds when it only looks things up, milliseconds when it
# signs a JWT or reads through to lifecycle; the buckets resolve both.
_CHECK_BUCKETS = (2e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 5e-2, 0.25)
# An xDS push lands in milliseconds at a few sandboxes, in about a second at 10 000.
_XDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
# A platform request is a lifecycle call: milliseconds for a read or a warm create, seconds
# for a cold create or a resume (the lifecycle's deadline for those is 120 s).
_PLATFORM_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


PREFIX = "agentcube_e2b_edge_"


class EdgeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        counter, histogram, gauge = self._counter, self._histogram, self._gauge
        self.decisions = counter(
            "decisions",
            "ext_authz decisions by surface and outcome (allow or the denial reason).",
            "surface",
            "outcome",
        )
        self.check_seconds = histogram(
            "check_seconds",
            "Wall time of Authorization.Check in the edge process.",
            _CHECK_BUCKETS,
            "surface",
        )
        self.platform_requests = counter(
            "platform_requests",
            "Platform API requests answered by ext_proc, by operation and HTTP status.",
            "operation",
            "status",
        )
        self.platform_seconds = histogram(
            "platform_seconds",
            "Wall time of a platform API request in the edge, lifecycle call included, by "
            "operation.",
            _PLATFORM_BUCKETS,
            "operation",
        )
        # the fast path's xDS (fast_path.py, xds_server.py), by type: rds or rtds
        self.xds_pushes = counter(
            "xds_pushes",
            "xDS responses sent to Envoy, by type (rds: routes, rtds: the runtime layer).",
            "type",
        )
        self.xds_rejections = counter(
            "xds_rejections",
            "xDS responses Envoy rejected (NACK), by type; it keeps what it had.",
            "type",
        )
        self.xds_apply_seconds = histogram(
            "xds_apply_seconds",
            "Seconds from sending an xDS response to Envoy's acknowledgement, by type.",
            _XDS_BUCKETS,
            "type",
        )
        self.xds_landed_seconds = histogram(
            "xds_landed_seconds",
            "Seconds a platform change waited for Envoy to stop serving the sandbox's stale "
            "fast route.",
            _XDS_BUCKETS,
        )
        self.xds_bytes = gauge("xds_bytes", "Size of the last routes sent to Envoy, bytes.", "type")
        # sizes, read when scraped (watch_sizes, watch_fast_path)
        self._fast_routes = gauge(
            "fast_path_sandboxes",
            "Sandboxes Envoy may serve without a Check (fast routes in the last routes built).",
        )
        self._gated = gauge(
            "fast_path_gated",
            "Sandboxes whose fast routes are switched off until routes without them land.",
        )
        self._directory = gauge("directory_sandboxes", "Sandboxes in the routing directory.")
        self._keys = gauge("api_keys", "Entries in the API key index.")
        self._jwts = gauge("jwt_cache_size", "Sandboxes holding a cached picod JWT.")

    def _counter(self, name: str, documentation: str, *labels: str) -> Counter:
        return Counter(PREFIX + name, documentation, labels, registry=self.registry)

    def _histogram(
        self, name: str, documentation: str, buckets: tuple[float, ...], *labels: str
    ) -> Histogram:
        return Histogram(
            PREFIX + name, documentation, labels, buckets=buckets, registry=self.registry
        )

    def _gauge(self, name: str, documentation: str, *labels: str) -> Gauge:
        return Gauge(PREFIX + name, documentation, labels, registry=self.registry)

    def watch_sizes(
        self,
        directory: Callable[[], float],
        keys: Callable[[], float],
        jwts: Callable[[], float],
    ) -> None:
        """Sizes are read when scraped, so the hot path never updates a gauge."""
        self._directory.set_function(directory)
        self._keys.set_function(keys)
        self._jwts.set_function(jwts)

    def watch_fast_path(self, routes: Callable[[], float], gated: Callable[[], float]) -> None:
        self._fast_routes.set_function(routes)
        self._gated.set_function(gated)

    def watch_informers(self, statuses: Callable[[], Mapping[str, Any]]) -> None:
        """Kubernetes mode: expose each informer's status (InformerStatus, by informer name)."""
        self.registry.register(_InformerCollector(statuses))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _InformerCollector(Collector):
    """Reads the informers' statuses at scrape time (they change on the loop, never here)."""

    def __init__(self, statuses: Callable[[], Mapping[str, Any]]) -> None:
        self._statuses = statuses

    def collect(self) -> Iterator[Metric]:
        prefix = PREFIX + "informer_"
        connected = GaugeMetricFamily(
            prefix + "connected",
            "1 while the informer's list/watch is answered by the API server, else 0 "
            "(the edge then serves from its cache).",
            labels=["informer"],
        )
        synced = GaugeMetricFamily(
            prefix + "last_sync_timestamp_seconds",
            "Unix time the informer's cache was last known current (list, event or bookmark).",
            labels=["informer"],
        )
        relists = CounterMetricFamily(
            prefix + "relists",
            "Lists after the first (410 Gone or a lost resume).",
            labels=["informer"],
        )
        events = CounterMetricFamily(
            prefix + "events", "Watch events applied (bookmarks excluded).", labels=["informer"]
        )
        errors = GaugeMetricFamily(
            prefix + "last_error_info",
            "1 with the informer's last failure as a label while it is failing.",
            labels=["informer", "error"],
        )
        for name, status in sorted(self._statuses().items()):
            connected.add_metric([name], 1.0 if status.connected else 0.0)
            if status.last_sync_at is not None:
                synced.add_metric([name], status.last_sync_at)
            relists.add_metric([name], status.relists)
            events.add_metric([name], status.events)
            if status.last_error:
                errors.add_metric([name, str(status.last_error)[:200]], 1.0)
        yield from (connected, synced, relists, events, errors)


async def _answer(
    metrics: EdgeMetrics, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        request_line = await asyncio.wait_for(reader.readline(), 5)
        while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
            pass
        parts = request_line.split()
        if len(parts) >= 2 and parts[0] == b"GET" and parts[1].split(b"?")[0] == b"/metrics":
            body, status, ctype = metrics.exposition(), b"200 OK", CONTENT_TYPE_LATEST.encode()
        else:
            body, status, ctype = b"not found\n", b"404 Not Found", b"text/plain"
        writer.write(
            b"HTTP/1.1 "
            + status
            + b"\r\nContent-Type: "
            + ctype
            + b"\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\nConnection: close\r\n\r\n"
            + body
        )
        await writer.drain()
    except (TimeoutError, ConnectionError) as error:
        log.debug("metrics request failed: %s", error)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def start_metrics_server(metrics: EdgeMetrics, address: str) -> asyncio.Server:
    """Serve GET /metrics on `address`: unix:/PATH (a 0600 socket) or HOST:PORT."""

    def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Any:
        return _answer(metrics, reader, writer)

    path = unix_socket_path(address)
    if path is not None:
        server = await asyncio.start_unix_server(answer, path)
        path.chmod(0o600)
        return server
    tcp = HostPort.parse(address, port_zero=True)
    return await asyncio.start_server(answer, tcp.host, tcp.port)
