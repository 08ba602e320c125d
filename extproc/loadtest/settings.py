"""What one `agentcube-e2b loadtest` run does, and the error it stops with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

LIFECYCLE = "lifecycle"
DATA_PLANE = "data-plane"
SCENARIOS = (LIFECYCLE, DATA_PLANE)
# the small envd request the data-plane scenario sends: a Connect unary RPC that picod
# authenticates and answers from the filesystem, or envd's plain health check
ENVD_REQUESTS = ("stat", "health")


class LoadtestError(Exception):
    """A run that cannot start or finish: the message is the whole one-line explanation."""


@dataclass(frozen=True)
class LifecycleSettings:
    # SDK clients, each looping create -> commands.run -> files.write/read -> kill. Default 4.
    clients: int = 4
    # bytes each iteration writes and reads back. Default 1024.
    file_bytes: int = 1024


@dataclass(frozen=True)
class DataPlaneSettings:
    # envd requests per second, sent on schedule whatever the gateway's answers take (open
    # loop). Default 500.
    rate: float = 500.0
    # sandboxes created before the run and killed after; requests are spread over them.
    # Default 4.
    sandboxes: int = 4
    # keep-alive HTTP/1.1 connections that carry the requests. Default 16.
    connections: int = 16
    # one of ENVD_REQUESTS. Default stat.
    request: str = "stat"
    # seconds a request may take before it counts as an error. Default 10.
    request_timeout_s: float = 10.0


@dataclass(frozen=True)
class LoadtestSettings:
    # one of SCENARIOS
    scenario: str
    # seconds of load. Default 30.
    duration_s: float
    # every Envoy of the gateway whose admin interface to read, `unix:/PATH` or `HOST:PORT`
    # (their stats are summed). Default unix:<up's state dir>/run/envoy-admin.sock.
    admins: tuple[str, ...]
    # the template every sandbox is created from. Default base.
    template: str = "base"
    # seconds each sandbox lives unless killed first, so an interrupted run leaves nothing
    # behind for long. Default 120 (data-plane: the duration plus 120).
    sandbox_timeout_s: int = 120
    # the HTTP connection manager's stat_prefix in the gateway's Envoy. Default e2b.
    stat_prefix: str = "e2b"
    # seconds to wait for Envoy's histograms to take in the run's last requests (Envoy
    # merges them on its stats flush, every 5 s by default). Default 6.
    histogram_wait_s: float = 6.0
    # where to write the machine-readable report, if anywhere
    json_path: Path | None = None
    lifecycle: LifecycleSettings = LifecycleSettings()
    data_plane: DataPlaneSettings = DataPlaneSettings()
