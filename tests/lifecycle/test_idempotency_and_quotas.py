"""Durable Idempotency-Key (24 h, in SQLite with the sandbox) and the per-tenant quotas.

The key is the servicer's (`idempotency.IdempotentCreates` over the backend), as the gRPC
service runs it."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2_grpc as pb_grpc
from extproc.core.errors import ResourceExhausted
from extproc.lifecycle.idempotency import IDEMPOTENCY_WINDOW_S, IdempotentCreates
from extproc.lifecycle.local import LocalBackend
from extproc.lifecycle.processes import scan_supervisors
from extproc.lifecycle.sandboxes import CreateSpec, State

from .conftest import Client, _assert_no_leak, make_settings
from .test_restart import _free_port, _serving, _start


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Running:
    def __init__(self, backend: LocalBackend, tasks: list[asyncio.Task[None]]) -> None:
        self.backend, self.tasks = backend, tasks
        self.creates = IdempotentCreates(backend)  # a servicer's, made anew with each start

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.backend.close()


async def _run(state: Path, clock: Clock) -> Running:
    backend = LocalBackend(make_settings(state).local, clock=clock)
    return Running(backend, await backend.start())


@pytest.fixture
def state(tmp_path: Path) -> AsyncIterator[Path]:
    yield tmp_path / "state"
    _assert_no_leak(tmp_path / "state")


def _spec(tenant: str = "t", key: str = "", **quota: int) -> CreateSpec:
    return CreateSpec(tenant=tenant, template="base", timeout_s=300, idempotency_key=key, **quota)


async def test_keys_outlive_a_restart_and_a_kill_then_expire_after_24h(state: Path) -> None:
    clock = Clock(1_000_000.0)
    first = await _run(state, clock)
    try:
        a = await first.creates.create(_spec(key="req-1"))
        b = await first.creates.create(_spec(tenant="u", key="req-1"))
        assert a.sandbox_id != b.sandbox_id  # the key is per tenant
        await first.backend.kill(a.sandbox_id, "t")
    finally:
        await first.stop()

    clock.now += 3600
    second = await _run(state, clock)
    try:
        again = await second.creates.create(_spec(key="req-1"))  # rebuilt from SQLite
        assert again.sandbox_id == a.sandbox_id
        assert again.envd_access_token == a.envd_access_token
        assert again.state is State.ENDED and again.end_reason == "killed"
        assert not second.backend.live  # nothing was started for the retry

        clock.now = a.started_at + IDEMPOTENCY_WINDOW_S + 1
        fresh = await second.creates.create(_spec(key="req-1"))
        assert fresh.sandbox_id != a.sandbox_id and fresh.state is State.RUNNING
        assert (await second.creates.create(_spec(key="req-1"))).sandbox_id == fresh.sandbox_id
        assert len(second.creates) == 1  # the expired keys were pruned
    finally:
        await second.stop()


async def test_same_key_across_sigkill_and_restart(tmp_path: Path) -> None:
    state, port = tmp_path / "state", _free_port()
    request = pb.CreateSandboxRequest(tenant="t", idempotency_key="retry-me")
    first = _start(state, port, "--pool-size", "0")
    try:
        await _serving(port)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            created = (await pb_grpc.SandboxServiceStub(channel).CreateSandbox(request)).sandbox
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    second = _start(state, port, "--kill-on-exit", "on", "--pool-size", "0")
    try:
        await _serving(port)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.SandboxServiceStub(channel)
            retried = (await stub.CreateSandbox(request)).sandbox
            assert retried.sandbox_id == created.sandbox_id
            other = pb.CreateSandboxRequest(tenant="u", idempotency_key="retry-me")
            assert (await stub.CreateSandbox(other)).sandbox.sandbox_id != created.sandbox_id
            listed = await stub.ListSandboxes(pb.ListSandboxesRequest(tenant="t"))
            assert [s.sandbox_id for s in listed.sandboxes] == [created.sandbox_id]
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0


async def test_quotas_per_tenant(state: Path) -> None:
    clock = Clock(1_000_000.0)
    running = await _run(state, clock)
    backend = running.backend
    try:
        # Concurrent creates count too: exactly one of two gets the only slot.
        results = await asyncio.gather(
            backend.create(_spec(max_sandboxes=1)), backend.create(_spec(max_sandboxes=1)),
            return_exceptions=True,
        )  # fmt: skip
        made = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, ResourceExhausted)]
        assert len(made) == 1 and len(refused) == 1, results
        assert "at most 1 running or paused" in refused[0].message
        assert "maxSandboxes" in refused[0].message
        await backend.pause(made[0].sandbox_id, "t")  # paused still counts
        with pytest.raises(ResourceExhausted, match="maxSandboxes"):
            await backend.create(_spec(max_sandboxes=1))
        other = await backend.create(_spec(tenant="u", max_sandboxes=1))  # unaffected
        # An idempotent retry is not a new sandbox: the quota does not apply to it.
        keyed = await running.creates.create(_spec(tenant="k", key="x", creates_per_minute=1))
        retried = await running.creates.create(_spec(tenant="k", key="x", creates_per_minute=1))
        assert retried == keyed
        with pytest.raises(ResourceExhausted, match="createsPerMinute"):
            await backend.create(_spec(tenant="k", creates_per_minute=1))
        clock.now += 60
        for sandbox in (made[0], other):
            await backend.kill(sandbox.sandbox_id, sandbox.tenant)
        await backend.create(_spec(tenant="k", creates_per_minute=1))
        await backend.create(_spec(max_sandboxes=1))  # the slot is free again
    finally:
        await running.stop()


async def _started_then_left(
    lifecycle: Client, state: Path, request: pb.CreateSandboxRequest
) -> None:
    """CreateSandbox, its caller gone once the sandbox's processes run (before it is ready)."""
    call = lifecycle.sandboxes.CreateSandbox(request)
    marker = f"agentcube-sandbox:{state.resolve()}:"
    async with asyncio.timeout(30):
        while not scan_supervisors(marker):
            await asyncio.sleep(0.005)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call


async def _listed(lifecycle: Client, tenant: str) -> list[str]:
    """The tenant's sandboxes once there are any (a create whose caller left may still run)."""
    async with asyncio.timeout(30):
        while True:
            page = await lifecycle.sandboxes.ListSandboxes(pb.ListSandboxesRequest(tenant=tenant))
            if page.sandboxes:
                return [s.sandbox_id for s in page.sandboxes]
            await asyncio.sleep(0.05)


async def test_a_create_whose_caller_leaves_halfway_is_the_tenants_sandbox(
    lifecycle: Client, tmp_path: Path
) -> None:
    # finished, not cut off: a half-made sandbox nobody knows of would escape every quota
    # and expiry; finished, it is listed, counted and killable like any other
    await _started_then_left(lifecycle, tmp_path / "state", pb.CreateSandboxRequest(tenant="t"))
    [made] = await _listed(lifecycle, "t")
    await lifecycle.sandboxes.KillSandbox(pb.KillSandboxRequest(sandbox_id=made, tenant="t"))
    # and the fixture finds no sandbox process left behind


async def test_a_keyed_create_whose_caller_left_is_what_its_retry_gets(
    lifecycle: Client, tmp_path: Path
) -> None:
    request = pb.CreateSandboxRequest(tenant="t", idempotency_key="client-timed-out")
    await _started_then_left(lifecycle, tmp_path / "state", request)
    retried = (await lifecycle.sandboxes.CreateSandbox(request)).sandbox
    assert await _listed(lifecycle, "t") == [retried.sandbox_id]
    await lifecycle.sandboxes.KillSandbox(
        pb.KillSandboxRequest(sandbox_id=retried.sandbox_id, tenant="t")
    )
