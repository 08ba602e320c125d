"""The platform API's operation table: each row's retry policy and deadline, and that every
handler calls lifecycle with its own row's deadline (in-process, no gRPC)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc.core.errors import NotFound
from extproc.core.quotas import DEFAULT_TABLE
from extproc.edge.platform_operation import (
    BOOT_DEADLINE_S,
    DEFAULT_DEADLINE_S,
    Call,
    Operation,
    PlatformContext,
    PlatformRequest,
)
from extproc.edge.rest_routes import OPERATIONS, NoRoute, resolve
from extproc.edge.watching import unsettled

ROWS = [row for row in OPERATIONS if isinstance(row, Operation)]
# A repeat after an unseen success would create or change something twice.
NOT_RETRYABLE = {
    "create_v1",
    "create_v2",
    "pause",
    "resume",
    "create_volume",
    "build_template",
    "start_template_build",
    "create_snapshot",
    "fork",
}
# Calls that wait for sandboxes to boot, stop or be written out.
BOOTING = {"create_v1", "create_v2", "resume", "connect_v1", "connect_v2", "pause"}
BOOTING |= {"fork", "create_snapshot"}
# The smallest valid body of each operation that needs one.
BODIES: dict[str, dict[str, Any]] = {
    "create_v1": {"templateID": "base"},
    "create_v2": {"templateID": "base"},
    "set_timeout": {"timeout": 60},
    "connect_v1": {"timeout": 60},
    "build_template": {"name": "mine"},
    "tag_template": {"target": "mine:v1", "tags": ["v2"]},
    "untag_template": {"name": "mine", "tags": ["v2"]},
    "create_volume": {"name": "vol"},
}


class RecordingStub:
    """Any lifecycle RPC: records its name and deadline, answers an empty reply."""

    def __init__(self, calls: list[tuple[str, float]]) -> None:
        self._calls = calls

    def __getattr__(self, rpc: str) -> Any:
        async def call(message: Any, timeout: float) -> Any:
            self._calls.append((rpc, timeout))
            return getattr(pb, f"{rpc}Response")()

        return call


def _context(calls: list[tuple[str, float]]) -> PlatformContext:
    stub: Any = RecordingStub(calls)
    return PlatformContext(
        sandboxes=stub, templates=stub, builds=stub, snapshots=stub, volumes=stub,
        domain="e2b.test", quotas=lambda: DEFAULT_TABLE, learn=lambda sandbox: None,
        forget=lambda sandbox_id: None, settling=unsettled,
    )  # fmt: skip


@pytest.mark.parametrize("row", ROWS, ids=lambda row: f"{row.method} {row.path}")
def test_each_row_keeps_its_retry_policy_and_deadline(row: Operation) -> None:
    assert row.retryable == (row.name not in NOT_RETRYABLE)
    assert row.deadline_s == (BOOT_DEADLINE_S if row.name in BOOTING else DEFAULT_DEADLINE_S)


@pytest.mark.parametrize("row", ROWS, ids=lambda row: f"{row.method} {row.path}")
async def test_each_handler_calls_lifecycle_with_its_rows_deadline(row: Operation) -> None:
    calls: list[tuple[str, float]] = []
    ids = tuple(f"sbx{n}" for n in range(row.path.count("{id}")))
    body = json.dumps(BODIES[row.name]).encode() if row.name in BODIES else b""
    headers = {":authority": "api.e2b.test"}
    request = PlatformRequest(row.method, row.path, headers, body, "team-a")
    with contextlib.suppress(NotFound):  # the empty reply's template is no one's (tags)
        await row.handler(_context(calls), request, Call(row, ids))
    if row.name == "health":
        assert calls == []  # health asks no one
    else:
        assert calls and all(timeout == row.deadline_s for _, timeout in calls), calls


@pytest.mark.parametrize(
    ("path", "v2"),
    [("/sandboxes", False), ("/v2/sandboxes", True), ("/sandboxes/sbx1/connect", False),
     ("/v2/sandboxes/sbx1/connect", True)],
)  # fmt: skip
def test_v2_is_a_property_of_the_row(path: str, v2: bool) -> None:
    call = resolve("POST", path)
    assert not isinstance(call, NoRoute)
    assert call.operation.v2 is v2
