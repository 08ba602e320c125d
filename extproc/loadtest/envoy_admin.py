"""Reading the gateway's Envoy admin interfaces: snapshots, settled snapshots, gauge peaks.

Counters and gauges are live, but Envoy merges histogram samples from its worker threads
only on its stats flush. The gateway's bootstrap sets `stats_flush_on_admin`, so reading the
admin flushes; an Envoy without it flushes every `stats_flush_interval` (5 s by default). A
snapshot whose histograms lag its counters would put the run's last requests into no window
at all, so the snapshots a report compares are "settled": taken once the HTTP connection
manager's request-time histogram holds as many samples as its completed-requests counter, or
when the wait runs out (and the report says so).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import httpx

from extproc.core.flags import unix_socket_path
from extproc.loadtest.envoy_stats import StatsSnapshot, merge, parse_snapshot
from extproc.loadtest.settings import LoadtestError

_POLL_S = 0.2
_TIMEOUT_S = 10.0


class EnvoyAdmin:
    """One or several Envoys of one gateway, read as one (their stats are summed)."""

    def __init__(self, endpoints: Sequence[str], stat_prefix: str) -> None:
        self.endpoints = tuple(endpoints)
        self.stat_prefix = stat_prefix
        self._clients: list[httpx.AsyncClient] = []
        self._cx_active_peaks: dict[str, int] = {}

    async def __aenter__(self) -> EnvoyAdmin:
        self._clients = [_admin_client(endpoint) for endpoint in self.endpoints]
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for client in self._clients:
            await client.aclose()

    def stat(self, name: str) -> str:
        """The full name of one of the HTTP connection manager's stats."""
        return f"http.{self.stat_prefix}.{name}"

    async def check(self) -> None:
        """Raise LoadtestError unless every admin answers and its Envoy is ready."""
        for endpoint, client in zip(self.endpoints, self._clients, strict=True):
            reply = await _get(endpoint, client, "/ready")
            if reply.status_code != 200:
                raise LoadtestError(
                    f"Envoy at {endpoint} is not ready: /ready answered "
                    f"{reply.status_code} {reply.text.strip()}"
                )

    async def snapshot(self) -> StatsSnapshot:
        return merge(
            await asyncio.gather(
                *(
                    self._snapshot(endpoint, client)
                    for endpoint, client in zip(self.endpoints, self._clients, strict=True)
                )
            )
        )

    async def settled_snapshot(self, wait_s: float) -> tuple[StatsSnapshot, bool]:
        """A snapshot whose request-time histogram has caught up with the completed-requests
        counter, and whether it did within `wait_s` (else the last snapshot taken)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        completed, timed = self.stat("downstream_rq_completed"), self.stat("downstream_rq_time")
        while True:
            snapshot = await self.snapshot()
            if snapshot.histogram(timed).count >= snapshot.value(completed):
                return snapshot, True
            if loop.time() >= deadline:
                return snapshot, False
            await asyncio.sleep(_POLL_S)

    async def sample_peaks(self, every_s: float = 1.0) -> None:
        """Until cancelled: the highest `upstream_cx_active` seen per cluster, and the
        connection manager's `downstream_cx_active`, in `cx_active_peaks` (keyed by cluster
        name, or by that stat's full name). A failed reading is skipped: peaks are a sample,
        not an account."""
        downstream = self.stat("downstream_cx_active")
        pattern = f"^({_escape(downstream)}|cluster\\..+\\.upstream_cx_active)$"
        while True:
            readings: dict[str, int] = {}
            for endpoint, client in zip(self.endpoints, self._clients, strict=True):
                with contextlib.suppress(LoadtestError):
                    body = await _get_json(
                        endpoint, client, "/stats", {"format": "json", "filter": pattern}
                    )
                    for entry in body.get("stats", []):
                        name, value = entry.get("name"), entry.get("value")
                        if not isinstance(name, str) or not isinstance(value, int):
                            continue
                        key = name
                        if name != downstream:
                            key = name.removeprefix("cluster.").removesuffix(".upstream_cx_active")
                        readings[key] = readings.get(key, 0) + value
            for key, value in readings.items():
                self._cx_active_peaks[key] = max(self._cx_active_peaks.get(key, 0), value)
            await asyncio.sleep(every_s)

    @property
    def cx_active_peaks(self) -> dict[str, int]:
        return dict(self._cx_active_peaks)

    async def _snapshot(self, endpoint: str, client: httpx.AsyncClient) -> StatsSnapshot:
        prefix = _escape(f"http.{self.stat_prefix}.")
        stats = await _get_json(
            endpoint,
            client,
            "/stats",
            {
                "format": "json",
                "histogram_buckets": "detailed",
                "usedonly": "",
                "filter": f"^({prefix}|cluster\\.)",
            },
        )
        clusters = await _get_json(endpoint, client, "/clusters", {"format": "json"})
        try:
            return parse_snapshot(stats, clusters)
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise LoadtestError(f"Envoy admin at {endpoint}: unexpected stats ({error})") from None


def _admin_client(endpoint: str) -> httpx.AsyncClient:
    """A client of the admin at `unix:/PATH` or `HOST:PORT` (the same as `up`'s
    `admin_client`, without the Envoy config packages that importing `up` costs: 3 s)."""
    path = unix_socket_path(endpoint)
    if path is None:
        return httpx.AsyncClient(base_url=f"http://{endpoint}", timeout=_TIMEOUT_S)
    transport = httpx.AsyncHTTPTransport(uds=str(path))
    return httpx.AsyncClient(transport=transport, base_url="http://envoy", timeout=_TIMEOUT_S)


def _escape(name: str) -> str:
    return name.replace(".", "\\.")


async def _get(
    endpoint: str,
    client: httpx.AsyncClient,
    path: str,
    params: dict[str, str] | None = None,
) -> httpx.Response:
    try:
        return await client.get(path, params=params)
    except httpx.TransportError as error:
        raise LoadtestError(
            f"Envoy admin at {endpoint} is not reachable: {error or type(error).__name__}"
        ) from None


async def _get_json(
    endpoint: str, client: httpx.AsyncClient, path: str, params: dict[str, str]
) -> Any:
    reply = await _get(endpoint, client, path, params)
    if reply.status_code != 200:
        raise LoadtestError(
            f"Envoy admin at {endpoint}: {path} answered {reply.status_code} "
            f"{reply.text.strip()[:200]}"
        )
    try:
        return json.loads(reply.content)
    except ValueError:
        raise LoadtestError(
            f"Envoy admin at {endpoint}: {path} did not answer JSON: is it an Envoy admin?"
        ) from None
