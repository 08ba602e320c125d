"""A running sandbox's entry in the edge's routing directory, for tests of the Check."""

from __future__ import annotations

from typing import Any

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc.edge.sandbox_directory import Route


def running_route(sandbox_id: str, access_token: str, **fields: Any) -> Route:
    """A secure, running sandbox of tenant `team` at 127.0.0.42 unless `fields` say else."""
    defaults: dict[str, Any] = {
        "endpoint_host": "127.0.0.42",
        "tenant": "team",
        "state": pb.SANDBOX_STATE_RUNNING,
        "secure": True,
        "end_at": 0.0,
    }
    return Route(sandbox_id=sandbox_id, envd_access_token=access_token, **{**defaults, **fields})
