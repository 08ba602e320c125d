"""SandboxService end to end: in-process gRPC server, real picod processes under bwrap."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from pathlib import Path

import grpc
import pytest

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc.core.caller_token import ALL_TENANTS_METADATA
from extproc.core.ids import is_sandbox_id
from extproc.lifecycle.networking import SUBNET
from extproc.lifecycle.processes import tree

from .conftest import Client
from .helpers import health, run_command, running

TENANT = "team-a"


async def create(client: Client, **kwargs: object) -> pb.Sandbox:
    kwargs.setdefault("tenant", TENANT)
    response = await client.sandboxes.CreateSandbox(pb.CreateSandboxRequest(**kwargs))
    return response.sandbox


async def test_create_get_list_kill(lifecycle: Client) -> None:
    sandbox = await create(lifecycle, metadata={"k": "v"}, env_vars={"GREETING": "hi"})
    assert is_sandbox_id(sandbox.sandbox_id)
    assert sandbox.state == pb.SANDBOX_STATE_RUNNING
    assert sandbox.template_id == "base"
    assert ipaddress.IPv4Address(sandbox.endpoint_host) in SUBNET
    assert 299 <= sandbox.end_at.seconds - sandbox.started_at.seconds <= 300
    assert await health(sandbox) == 204
    code, out = await run_command(sandbox, 'echo "$GREETING from $HOME"')
    assert (code, out) == (0, "hi from /home/user\n")

    got = await lifecycle.sandboxes.GetSandbox(
        pb.GetSandboxRequest(sandbox_id=sandbox.sandbox_id, tenant=TENANT)
    )
    assert got.sandbox == sandbox
    listed = await lifecycle.sandboxes.ListSandboxes(pb.ListSandboxesRequest(tenant=TENANT))
    assert [s.sandbox_id for s in listed.sandboxes] == [sandbox.sandbox_id]
    assert listed.total_running == 1 and listed.next_page_token == ""

    entry = lifecycle.running.backend.live[sandbox.sandbox_id]
    pids = tree(entry.process.pid)
    await lifecycle.sandboxes.KillSandbox(
        pb.KillSandboxRequest(sandbox_id=sandbox.sandbox_id, tenant=TENANT)
    )
    assert not any(running(p) for p in pids)
    assert await health(sandbox) == 0
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await lifecycle.sandboxes.GetSandbox(
            pb.GetSandboxRequest(sandbox_id=sandbox.sandbox_id, tenant=TENANT)
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_fifty_concurrent_creates(lifecycle: Client) -> None:
    sandboxes = await asyncio.gather(*(create(lifecycle) for _ in range(50)))
    ids = {s.sandbox_id for s in sandboxes}
    hosts = {s.endpoint_host for s in sandboxes}
    assert len(ids) == 50 and len(hosts) == 50
    statuses = await asyncio.gather(*(health(s) for s in sandboxes))
    assert set(statuses) == {204}
    listed = await lifecycle.sandboxes.ListSandboxes(
        pb.ListSandboxesRequest(tenant=TENANT, page_size=20)
    )
    seen = [s.sandbox_id for s in listed.sandboxes]
    while listed.next_page_token:
        listed = await lifecycle.sandboxes.ListSandboxes(
            pb.ListSandboxesRequest(tenant=TENANT, page_size=20, page_token=listed.next_page_token)
        )
        seen += [s.sandbox_id for s in listed.sandboxes]
    assert len(seen) == 50 and set(seen) == ids
    assert listed.total_running == 50


async def test_timeout_expires_and_kills_processes(lifecycle: Client) -> None:
    sandbox = await create(lifecycle, timeout_seconds=2)
    entry = lifecycle.running.backend.live[sandbox.sandbox_id]
    pids = tree(entry.process.pid)
    started = time.monotonic()
    while sandbox.sandbox_id in lifecycle.running.backend.live:
        await asyncio.sleep(0.05)
        assert time.monotonic() - started < 3.0, "not expired within 3 s"
    # The sandbox leaves the index before its SIGKILLed processes are reaped (local.py):
    # they must be gone within the same 3 s.
    while any(running(p) for p in pids):
        await asyncio.sleep(0.05)
        assert time.monotonic() - started < 3.0, "processes still running 3 s after create"
    assert await health(sandbox) == 0


async def test_set_timeout_shortens_and_lengthens(lifecycle: Client) -> None:
    sandbox = await create(lifecycle, timeout_seconds=60)
    request = pb.SetSandboxTimeoutRequest(sandbox_id=sandbox.sandbox_id, tenant=TENANT)
    request.timeout_seconds = 600
    longer = (await lifecycle.sandboxes.SetSandboxTimeout(request)).sandbox
    assert longer.end_at.seconds - int(time.time()) in range(595, 601)
    request.timeout_seconds = 1
    shorter = (await lifecycle.sandboxes.SetSandboxTimeout(request)).sandbox
    assert shorter.end_at.seconds <= int(time.time()) + 1
    await asyncio.sleep(1.6)
    assert sandbox.sandbox_id not in lifecycle.running.backend.live
    # Capped at started_at + max (1 h by default).
    other = await create(lifecycle)
    capped = await lifecycle.sandboxes.SetSandboxTimeout(
        pb.SetSandboxTimeoutRequest(sandbox_id=other.sandbox_id, tenant=TENANT,
                                    timeout_seconds=10 * 3600)
    )  # fmt: skip
    assert capped.sandbox.end_at.seconds - other.started_at.seconds <= 3600
    # Refresh and Connect only extend.
    refreshed = await lifecycle.sandboxes.RefreshSandbox(
        pb.RefreshSandboxRequest(sandbox_id=other.sandbox_id, tenant=TENANT, duration_seconds=5)
    )
    assert refreshed.sandbox.end_at == capped.sandbox.end_at


async def _ticks(home: Path) -> int:
    path = home / "ticks"
    return len(path.read_text().splitlines()) if path.exists() else 0


async def test_pause_stops_progress_and_connect_resumes(lifecycle: Client) -> None:
    sandbox = await create(lifecycle)
    home = lifecycle.running.backend.home_of(sandbox.sandbox_id)
    code, _ = await run_command(
        sandbox, "nohup sh -c 'while true; do echo x >> /home/user/ticks; sleep 0.05; done' "
        ">/dev/null 2>&1 &",
    )
    assert code == 0
    await asyncio.sleep(0.5)
    assert await _ticks(home) > 0
    paused = await lifecycle.sandboxes.PauseSandbox(
        pb.PauseSandboxRequest(sandbox_id=sandbox.sandbox_id, tenant=TENANT)
    )
    assert paused.sandbox.state == pb.SANDBOX_STATE_PAUSED
    frozen = await _ticks(home)
    await asyncio.sleep(0.5)
    assert await _ticks(home) == frozen
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await lifecycle.sandboxes.PauseSandbox(
            pb.PauseSandboxRequest(sandbox_id=sandbox.sandbox_id, tenant=TENANT)
        )
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    listed = await lifecycle.sandboxes.ListSandboxes(
        pb.ListSandboxesRequest(tenant=TENANT, states=[pb.SANDBOX_STATE_PAUSED])
    )
    assert [s.sandbox_id for s in listed.sandboxes] == [sandbox.sandbox_id]
    connected = await lifecycle.sandboxes.ConnectSandbox(
        pb.ConnectSandboxRequest(sandbox_id=sandbox.sandbox_id, tenant=TENANT)
    )
    assert connected.resumed and connected.sandbox.state == pb.SANDBOX_STATE_RUNNING
    await asyncio.sleep(0.5)
    assert await _ticks(home) > frozen
    again = await lifecycle.sandboxes.ConnectSandbox(
        pb.ConnectSandboxRequest(sandbox_id=sandbox.sandbox_id, tenant=TENANT)
    )
    assert not again.resumed
    # Explicit Pause/Resume too.
    await lifecycle.sandboxes.PauseSandbox(
        pb.PauseSandboxRequest(sandbox_id=sandbox.sandbox_id, tenant=TENANT)
    )
    resumed = await lifecycle.sandboxes.ResumeSandbox(
        pb.ResumeSandboxRequest(sandbox_id=sandbox.sandbox_id, tenant=TENANT)
    )
    assert resumed.sandbox.state == pb.SANDBOX_STATE_RUNNING


async def test_files_are_isolated_between_sandboxes(lifecycle: Client) -> None:
    a, b = await asyncio.gather(create(lifecycle), create(lifecycle))
    code, _ = await run_command(a, "echo secret > /home/user/only-a && ls /home/user")
    assert code == 0
    code, out = await run_command(b, "cat /home/user/only-a; ls /home/user")
    assert code != 0 or "secret" not in out
    assert "only-a" not in out
    state_dir = lifecycle.running.backend.dir.resolve()
    code, out = await run_command(b, f"ls -A {state_dir} | wc -l; touch /etc/x 2>&1; echo $$")
    lines = out.split()
    assert lines[0] == "0", "the state dir (seed, other homes) must be hidden"
    code, out = await run_command(b, "cat /proc/1/cmdline | tr '\\0' ' '; echo; ps -e | wc -l")
    assert out.startswith("agentcube-e2b-init")  # pid 1 of its own namespace: its init
    assert int(out.split()[-1]) < 10, out  # no process of the host or another sandbox


async def test_metrics(lifecycle: Client) -> None:
    # The series itself (interval, cap, window, pause) is in test_metric_series.
    sandbox = await create(lifecycle)
    response = await lifecycle.sandboxes.GetSandboxMetrics(
        pb.GetSandboxMetricsRequest(sandbox_id=sandbox.sandbox_id, tenant=TENANT)
    )
    assert response.metrics, "a brand-new sandbox has its first sample"
    metric = response.metrics[-1]
    assert metric.cpu_count == 2
    assert metric.mem_total == 512 * 1024 * 1024
    assert 5_000_000 < metric.mem_used < 512 * 1024 * 1024
    assert 0 < metric.disk_used < metric.disk_total
    assert 0.0 <= metric.cpu_used_pct <= 100.0


async def test_list_filters_and_order(lifecycle: Client) -> None:
    first = await create(lifecycle, metadata={"app": "x", "env": "dev"})
    second = await create(lifecycle, metadata={"app": "x"})
    await create(lifecycle, tenant="team-b", metadata={"app": "x"})
    list_ = lifecycle.sandboxes.ListSandboxes
    desc = await list_(pb.ListSandboxesRequest(tenant=TENANT))
    assert [s.sandbox_id for s in desc.sandboxes] == [second.sandbox_id, first.sandbox_id]
    asc = await list_(pb.ListSandboxesRequest(tenant=TENANT, order=pb.LIST_ORDER_ASC))
    assert [s.sandbox_id for s in asc.sandboxes] == [first.sandbox_id, second.sandbox_id]
    meta = await list_(pb.ListSandboxesRequest(tenant=TENANT, metadata={"app": "x", "env": "dev"}))
    assert [s.sandbox_id for s in meta.sandboxes] == [first.sandbox_id]
    # Both bounds are inclusive: a bound copied from a sandbox's start includes it.
    after = await list_(pb.ListSandboxesRequest(tenant=TENANT, started_after=second.started_at))
    assert [s.sandbox_id for s in after.sandboxes] == [second.sandbox_id]
    before = await list_(pb.ListSandboxesRequest(tenant=TENANT, started_before=first.started_at))
    assert [s.sandbox_id for s in before.sandboxes] == [first.sandbox_id]
    both = await list_(
        pb.ListSandboxesRequest(
            tenant=TENANT, started_after=first.started_at, started_before=second.started_at
        )
    )
    assert {s.sandbox_id for s in both.sandboxes} == {first.sandbox_id, second.sandbox_id}
    by_template = await list_(pb.ListSandboxesRequest(tenant=TENANT, template_id="base"))
    assert len(by_template.sandboxes) == 2
    none = await list_(pb.ListSandboxesRequest(tenant=TENANT, template_id="nope"))
    assert not none.sandboxes
    page = await list_(pb.ListSandboxesRequest(tenant=TENANT, page_size=1))
    assert page.next_page_token and len(page.sandboxes) == 1
    everyone = await list_(pb.ListSandboxesRequest(tenant=""), metadata=ALL_TENANTS_METADATA)
    assert len(everyone.sandboxes) == 3


async def test_idempotency_key(lifecycle: Client) -> None:
    a, b = await asyncio.gather(
        create(lifecycle, idempotency_key="req-1"), create(lifecycle, idempotency_key="req-1")
    )
    c = await create(lifecycle, idempotency_key="req-1")
    assert a.sandbox_id == b.sandbox_id == c.sandbox_id
    other_tenant = await create(lifecycle, tenant="team-b", idempotency_key="req-1")
    assert other_tenant.sandbox_id != a.sandbox_id


async def test_tenants_never_see_each_other(lifecycle: Client) -> None:
    sandbox = await create(lifecycle)
    ident = {"sandbox_id": sandbox.sandbox_id, "tenant": "team-b"}
    calls = [
        lifecycle.sandboxes.GetSandbox(pb.GetSandboxRequest(**ident)),
        lifecycle.sandboxes.KillSandbox(pb.KillSandboxRequest(**ident)),
        lifecycle.sandboxes.PauseSandbox(pb.PauseSandboxRequest(**ident)),
        lifecycle.sandboxes.ConnectSandbox(pb.ConnectSandboxRequest(**ident)),
        lifecycle.sandboxes.SetSandboxTimeout(pb.SetSandboxTimeoutRequest(**ident)),
        lifecycle.sandboxes.GetSandboxMetrics(pb.GetSandboxMetricsRequest(**ident)),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert info.value.details() == f"sandbox {sandbox.sandbox_id} not found"
    # The edge's directory reads with an empty tenant, saying it means every tenant.
    trusted = await lifecycle.sandboxes.GetSandbox(
        pb.GetSandboxRequest(sandbox_id=sandbox.sandbox_id), metadata=ALL_TENANTS_METADATA
    )
    assert trusted.sandbox.tenant == TENANT
    others = await lifecycle.sandboxes.ListSandboxes(pb.ListSandboxesRequest(tenant="team-b"))
    assert not others.sandboxes
