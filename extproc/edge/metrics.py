"""Prometheus metrics of one edge process, on its own registry (no module globals).

Served by a tiny asyncio HTTP responder instead of prometheus_client's threaded server, so
the process stays single-threaded async and stops with the other tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger(__name__)

# Check takes tens of microseconds when it only looks things up, milliseconds when it
# signs a JWT or reads through to lifecycle; the buckets resolve both.
_CHECK_BUCKETS = (2e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 5e-2, 0.25)


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

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


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


async def start_metrics_server(metrics: EdgeMetrics, host: str, port: int) -> asyncio.Server:
    return await asyncio.start_server(lambda r, w: _answer(metrics, r, w), host, port)
