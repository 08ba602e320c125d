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


class EdgeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.decisions = Counter(
            "agentcube_e2b_edge_decisions",
            "ext_authz decisions by surface and outcome (allow or the denial reason).",
            ["surface", "outcome"],
            registry=self.registry,
        )
        self.check_seconds = Histogram(
            "agentcube_e2b_edge_check_seconds",
            "Wall time of Authorization.Check in the edge process.",
            ["surface"],
            buckets=_CHECK_BUCKETS,
            registry=self.registry,
        )
        self.platform_requests = Counter(
            "agentcube_e2b_edge_platform_requests",
            "Platform API requests answered by ext_proc, by operation and HTTP status.",
            ["operation", "status"],
            registry=self.registry,
        )
        self.platform_seconds = Histogram(
            "agentcube_e2b_edge_platform_seconds",
            "Wall time of a platform API request in the edge, lifecycle call included, by "
            "operation.",
            ["operation"],
            buckets=_PLATFORM_BUCKETS,
            registry=self.registry,
        )
        # the fast path's xDS (fast_path.py, xds_server.py), by type: rds or rtds
        self.xds_pushes = Counter(
            "agentcube_e2b_edge_xds_pushes",
            "xDS responses sent to Envoy, by type (rds: routes, rtds: the runtime layer).",
            ["type"],
            registry=self.registry,
        )
        self.xds_rejections = Counter(
            "agentcube_e2b_edge_xds_rejections",
            "xDS responses Envoy rejected (NACK), by type; it keeps what it had.",
            ["type"],
            registry=self.registry,
        )
        self.xds_apply_seconds = Histogram(
            "agentcube_e2b_edge_xds_apply_seconds",
            "Seconds from sending an xDS response to Envoy's acknowledgement, by type.",
            ["type"],
            buckets=_XDS_BUCKETS,
            registry=self.registry,
        )
        self.xds_landed_seconds = Histogram(
            "agentcube_e2b_edge_xds_landed_seconds",
            "Seconds a platform change waited for Envoy to stop serving the sandbox's stale "
            "fast route.",
            buckets=_XDS_BUCKETS,
            registry=self.registry,
        )
        self.xds_bytes = Gauge(
            "agentcube_e2b_edge_xds_bytes",
            "Size of the last routes sent to Envoy, bytes.",
            ["type"],
            registry=self.registry,
        )
        self._fast_routes = Gauge(
            "agentcube_e2b_edge_fast_path_sandboxes",
            "Sandboxes Envoy may serve without a Check (fast routes in the last routes built).",
            registry=self.registry,
        )
        self._gated = Gauge(
            "agentcube_e2b_edge_fast_path_gated",
            "Sandboxes whose fast routes are switched off until routes without them land.",
            registry=self.registry,
        )
        self._directory = Gauge(
            "agentcube_e2b_edge_directory_sandboxes",
            "Sandboxes in the routing directory.",
            registry=self.registry,
        )
        self._keys = Gauge(
            "agentcube_e2b_edge_api_keys", "Entries in the API key index.", registry=self.registry
        )
        self._jwts = Gauge(
            "agentcube_e2b_edge_jwt_cache_size",
            "Sandboxes holding a cached picod JWT.",
            registry=self.registry,
        )

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
        prefix = "agentcube_e2b_edge_informer_"
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
    host, _, port = address.rpartition(":")
    return await asyncio.start_server(answer, host.strip("[]"), int(port))
