"""The request id from the edge to the lifecycle service, in process: the edge's channel sends
the current request's `x-request-id` (and only then), the lifecycle server runs each RPC as
that request and logs one line for it, whatever its status."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2_grpc as pb_grpc
from extproc.core.caller_token import new_token, write_token_file
from extproc.core.logs import JsonFormatter
from extproc.core.request_context import (
    RequestContext,
    begin_request,
    current_request,
    end_request,
    outside_requests,
)
from extproc.edge.lifecycle_channel import lifecycle_channel
from extproc.lifecycle.server import new_server

REQUEST_ID = "5b0e2c51-7a0e-4d0a-9a51-0c5d3c1f9e11"
HANDLER_LOGGER = "tests.observability.handler"


class Recording(pb_grpc.SandboxServiceServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self.seen: list[tuple[dict[str, str], RequestContext | None]] = []

    async def GetSandbox(self, request: Any, context: Any) -> pb.GetSandboxResponse:
        self.seen.append((dict(context.invocation_metadata()), current_request()))
        logging.getLogger(HANDLER_LOGGER).info("looked it up")
        return pb.GetSandboxResponse(sandbox=pb.Sandbox(sandbox_id=request.sandbox_id))

    async def CreateSandbox(self, request: Any, context: Any) -> pb.CreateSandboxResponse:
        return pb.CreateSandboxResponse(sandbox=pb.Sandbox(sandbox_id="made1"))

    async def KillSandbox(self, request: Any, context: Any) -> pb.KillSandboxResponse:
        await context.abort(grpc.StatusCode.NOT_FOUND, "sandbox not found")
        raise AssertionError("abort raises")


@pytest.fixture
def logged() -> Iterator[io.StringIO]:
    """JSON lines of the lifecycle's RPC log and of the handler above."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("lifecycle"))
    loggers = [logging.getLogger(name) for name in ("extproc.lifecycle", HANDLER_LOGGER)]
    for log in loggers:
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        for log in loggers:
            log.removeHandler(handler)
            log.setLevel(logging.NOTSET)


def entries(stream: io.StringIO, logger: str) -> list[dict[str, Any]]:
    parsed = [json.loads(line) for line in stream.getvalue().splitlines()]
    return [entry for entry in parsed if entry["logger"] == logger]


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Recording, str, Path]]:
    """(servicer, target, caller token file) of a lifecycle server built as the real one."""
    token = new_token()
    token_file = tmp_path / "token"
    write_token_file(token_file, token)
    servicer = Recording()
    server = new_server(None, token)
    pb_grpc.add_SandboxServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield servicer, f"127.0.0.1:{port}", token_file
    finally:
        await server.stop(0)


async def test_a_call_made_for_a_request_carries_its_id_and_logs_under_it(
    served: tuple[Recording, str, Path], logged: io.StringIO
) -> None:
    servicer, target, token_file = served
    async with lifecycle_channel(target, token_file) as channel:
        stub = pb_grpc.SandboxServiceStub(channel)
        context = begin_request(REQUEST_ID, "team-a")
        try:
            await stub.GetSandbox(pb.GetSandboxRequest(sandbox_id="sbx1", tenant="team-a"))
            await stub.CreateSandbox(pb.CreateSandboxRequest(tenant="team-a"))
            with pytest.raises(grpc.aio.AioRpcError) as killed:
                await stub.KillSandbox(pb.KillSandboxRequest(sandbox_id="sbx9", tenant="team-a"))
        finally:
            end_request(context)
    assert killed.value.code() == grpc.StatusCode.NOT_FOUND
    ((metadata, seen),) = servicer.seen
    assert metadata["x-request-id"] == REQUEST_ID
    assert metadata["authorization"].startswith("Bearer ")
    assert seen == RequestContext(REQUEST_ID, "team-a", "sbx1")
    (handler_line,) = entries(logged, HANDLER_LOGGER)
    assert handler_line["request_id"] == REQUEST_ID
    assert (handler_line["tenant"], handler_line["sandbox_id"]) == ("team-a", "sbx1")
    rpcs = entries(logged, "extproc.lifecycle.rpc_logging")
    assert [(e["rpc"], e["grpc_status"], e.get("sandbox_id")) for e in rpcs] == [
        ("GetSandbox", "OK", "sbx1"),
        ("CreateSandbox", "OK", "made1"),  # learnt from the reply
        ("KillSandbox", "NOT_FOUND", "sbx9"),
    ]
    assert all(e["request_id"] == REQUEST_ID and e["tenant"] == "team-a" for e in rpcs)
    assert rpcs[0]["message"].startswith("GetSandbox OK in ")
    assert current_request() is None


async def test_a_call_outside_a_request_carries_no_id(
    served: tuple[Recording, str, Path], logged: io.StringIO
) -> None:
    servicer, target, token_file = served
    async with lifecycle_channel(target, token_file) as channel:
        await pb_grpc.SandboxServiceStub(channel).GetSandbox(
            pb.GetSandboxRequest(sandbox_id="sbx1", tenant="team-a")
        )
    ((metadata, seen),) = servicer.seen
    assert "x-request-id" not in metadata
    assert seen == RequestContext("", "team-a", "sbx1")
    (line,) = entries(logged, "extproc.lifecycle.rpc_logging")
    assert "request_id" not in line and line["grpc_status"] == "OK"


async def test_background_work_a_request_starts_can_leave_it() -> None:
    async def seen() -> RequestContext | None:
        return current_request()

    token = begin_request("req-1", tenant="team-a")
    try:
        inherited = await asyncio.create_task(seen())
        detached = await asyncio.create_task(seen(), context=outside_requests())
        still = current_request()
    finally:
        end_request(token)
    assert inherited == RequestContext("req-1", "team-a", "")
    assert detached is None
    assert still == RequestContext("req-1", "team-a", "")  # the request itself keeps its id


async def test_a_refused_caller_is_logged_too(
    served: tuple[Recording, str, Path], logged: io.StringIO, tmp_path: Path
) -> None:
    _, target, _ = served
    wrong = tmp_path / "wrong-token"
    write_token_file(wrong, new_token())
    async with lifecycle_channel(target, wrong) as channel:
        context = begin_request(REQUEST_ID)
        try:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await pb_grpc.SandboxServiceStub(channel).GetSandbox(
                    pb.GetSandboxRequest(sandbox_id="sbx1", tenant="team-a")
                )
        finally:
            end_request(context)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    (line,) = entries(logged, "extproc.lifecycle.rpc_logging")
    assert (line["rpc"], line["grpc_status"], line["request_id"]) == (
        "GetSandbox",
        "UNAUTHENTICATED",
        REQUEST_ID,
    )
    assert "Bearer" not in logged.getvalue()
