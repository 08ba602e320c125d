"""A lifecycle process killed with SIGKILL and restarted re-adopts its live sandboxes."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2_grpc as pb_grpc
from extproc.lifecycle.processes import scan_supervisors

from .helpers import health, run_command


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(state: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "extproc.cli", "lifecycle", "--listen", f"127.0.0.1:{port}",
         "--state-dir", str(state), "--pool-size", "1", "--interpreter-pool-size", "0",
         "--grace", "1", *extra],
    )  # fmt: skip


async def _serving(port: int) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for _ in range(300):
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("lifecycle never became SERVING")


async def test_sigkill_restart_readopts_every_live_sandbox(tmp_path: Path) -> None:
    state, port = tmp_path / "state", _free_port()
    first = _start(state, port)
    try:
        await _serving(port)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.SandboxServiceStub(channel)
            created = [
                (await stub.CreateSandbox(pb.CreateSandboxRequest(tenant="t"))).sandbox
                for _ in range(3)
            ]
            await stub.PauseSandbox(
                pb.PauseSandboxRequest(sandbox_id=created[2].sandbox_id, tenant="t")
            )
            await asyncio.sleep(0.5)  # let the pool refill, so there is a pool sandbox to reap
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    for sandbox in created[:2]:
        assert await health(sandbox) == 204, "sandboxes outlive the service"

    second = _start(state, port, "--kill-on-exit", "on", "--pool-size", "0")
    try:
        await _serving(port)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.SandboxServiceStub(channel)
            listed = await stub.ListSandboxes(pb.ListSandboxesRequest(tenant="t"))
            assert {s.sandbox_id for s in listed.sandboxes} == {s.sandbox_id for s in created}
            states = {s.sandbox_id: s.state for s in listed.sandboxes}
            assert states[created[2].sandbox_id] == pb.SANDBOX_STATE_PAUSED
            for sandbox in created[:2]:
                code, out = await run_command(sandbox, "echo alive")
                assert (code, out) == (0, "alive\n")
            # The pool sandbox of the first run was never handed out: it is gone.
            marker = f"agentcube-sandbox:{state.resolve()}:"
            assert len(scan_supervisors(marker)) == 3
            connected = await stub.ConnectSandbox(
                pb.ConnectSandboxRequest(sandbox_id=created[2].sandbox_id, tenant="t")
            )
            assert connected.resumed
            assert await health(created[2]) == 204
            await stub.KillSandbox(
                pb.KillSandboxRequest(sandbox_id=created[0].sandbox_id, tenant="t")
            )
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0
    assert scan_supervisors(f"agentcube-sandbox:{state.resolve()}:") == []
