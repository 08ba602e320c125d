"""Filesystem-only pause (E2B's `memory: false` / `autoPauseMemory: false`) in local mode.

The processes end, the writable layer stays; a resume starts the sandbox afresh on it with
the same id, token, address and env vars. Through the in-process gRPC service with real
isolated sandboxes, a lifecycle restart, the store's migration, and the edge's parsing.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2_grpc as pb_grpc
from extproc.core.errors import InvalidArgument
from extproc.edge import rest_json, rest_requests
from extproc.lifecycle import mounting, spawning
from extproc.lifecycle.networking import NETNS_DIR
from extproc.lifecycle.processes import NO_PROCESS, scan_supervisors
from extproc.lifecycle.sandboxes import PauseMode, State
from extproc.lifecycle.server import serving
from extproc.lifecycle.store import Store

from .conftest import Client, _assert_no_leak, make_settings
from .helpers import PICOD_PORT, health, run_command
from .test_interpreter import _execute, _wait_pool
from .test_restart import _free_port, _serving, _start

TENANT = "team-a"
# A background writer that proves processes run: one line every 50 ms.
# The first tick is written before the command returns, so a pause right after it always
# finds the file; the background loop then keeps writing until its process ends.
_TICKER = (
    "echo x >> /home/user/ticks && "
    "nohup sh -c 'while true; do echo x >> /home/user/ticks; sleep 0.05; done' >/dev/null 2>&1 &"
)


async def _create(client: Client, **kwargs: Any) -> pb.Sandbox:
    kwargs.setdefault("tenant", TENANT)
    return (await client.sandboxes.CreateSandbox(pb.CreateSandboxRequest(**kwargs))).sandbox


def _ident(sandbox: pb.Sandbox) -> dict[str, str]:
    return {"sandbox_id": sandbox.sandbox_id, "tenant": TENANT}


def _supervisors(client: Client, sandbox_id: str) -> list[int]:
    return scan_supervisors(spawning.marker(client.running.backend.settings, sandbox_id))


async def _write_and_start_ticker(sandbox: pb.Sandbox) -> None:
    code, _ = await run_command(sandbox, f"echo kept > /home/user/note && {_TICKER}")
    assert code == 0


async def _no_died_tasks(client: Client) -> None:
    """Let every exit callback the pause caused run to its end."""
    await asyncio.sleep(0)
    await asyncio.gather(*list(client.running.backend._tasks))


async def test_filesystem_pause_ends_processes_and_resume_starts_afresh(
    lifecycle: Client,
) -> None:
    sandbox = await _create(lifecycle, env_vars={"GREETING": "hi"})
    await _write_and_start_ticker(sandbox)
    home = lifecycle.running.backend.home_of(sandbox.sandbox_id)
    assert _supervisors(lifecycle, sandbox.sandbox_id)

    paused = await lifecycle.sandboxes.PauseSandbox(
        pb.PauseSandboxRequest(**_ident(sandbox), memory=False)
    )
    assert paused.sandbox.state == pb.SANDBOX_STATE_PAUSED
    assert paused.sandbox.pause_mode == pb.PAUSE_MODE_FILESYSTEM
    # Every process is gone (not stopped): no supervisor, picod does not answer, the ticker
    # writes nothing more; the files stay.
    assert _supervisors(lifecycle, sandbox.sandbox_id) == []
    assert await health(sandbox) == 0
    ticks = (home / "ticks").read_text()
    await asyncio.sleep(0.3)
    assert (home / "ticks").read_text() == ticks
    assert (home / "note").read_text() == "kept\n"
    # Ending the processes on purpose is not the sandbox dying.
    await _no_died_tasks(lifecycle)
    got = await lifecycle.sandboxes.GetSandbox(pb.GetSandboxRequest(**_ident(sandbox)))
    assert got.sandbox.state == pb.SANDBOX_STATE_PAUSED
    assert got.sandbox.pause_mode == pb.PAUSE_MODE_FILESYSTEM
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await lifecycle.sandboxes.PauseSandbox(pb.PauseSandboxRequest(**_ident(sandbox)))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # already paused

    connected = await lifecycle.sandboxes.ConnectSandbox(
        pb.ConnectSandboxRequest(**_ident(sandbox))
    )
    assert connected.resumed
    resumed = connected.sandbox
    assert resumed.state == pb.SANDBOX_STATE_RUNNING
    assert resumed.pause_mode == pb.PAUSE_MODE_UNSPECIFIED
    assert (resumed.sandbox_id, resumed.envd_access_token, resumed.endpoint_host) == (
        sandbox.sandbox_id, sandbox.envd_access_token, sandbox.endpoint_host,
    )  # fmt: skip
    assert await health(resumed) == 204
    code, out = await run_command(resumed, 'cat /home/user/note; echo "$GREETING"; ps -e -o comm=')
    assert code == 0
    assert out.split("\n")[:2] == ["kept", "hi"], out
    assert "sleep" not in out.split("\n")[2:], "the ticker did not come back"
    await asyncio.sleep(0.3)
    assert (home / "ticks").read_text() == ticks
    # The new processes are watched: if they die, the sandbox ends.
    entry = lifecycle.running.backend.live[sandbox.sandbox_id]
    assert entry.process.pid != NO_PROCESS
    assert entry.row.pid == entry.process.pid
    os.killpg(entry.process.pid, signal.SIGKILL)
    for _ in range(100):
        if sandbox.sandbox_id not in lifecycle.running.backend.live:
            break
        await asyncio.sleep(0.05)
    assert sandbox.sandbox_id not in lifecycle.running.backend.live


async def test_explicit_resume_and_a_second_pause_of_either_mode(lifecycle: Client) -> None:
    sandbox = await _create(lifecycle)
    await _write_and_start_ticker(sandbox)
    await lifecycle.sandboxes.PauseSandbox(pb.PauseSandboxRequest(**_ident(sandbox), memory=False))
    resumed = await lifecycle.sandboxes.ResumeSandbox(pb.ResumeSandboxRequest(**_ident(sandbox)))
    assert resumed.sandbox.state == pb.SANDBOX_STATE_RUNNING
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await lifecycle.sandboxes.ResumeSandbox(pb.ResumeSandboxRequest(**_ident(sandbox)))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # not paused
    # memory=true (and absent) is the full pause: SIGSTOP, the processes stay.
    full = await lifecycle.sandboxes.PauseSandbox(
        pb.PauseSandboxRequest(**_ident(sandbox), memory=True)
    )
    assert full.sandbox.pause_mode == pb.PAUSE_MODE_FULL
    assert _supervisors(lifecycle, sandbox.sandbox_id)
    await lifecycle.sandboxes.ConnectSandbox(pb.ConnectSandboxRequest(**_ident(sandbox)))
    again = await lifecycle.sandboxes.PauseSandbox(
        pb.PauseSandboxRequest(**_ident(sandbox), memory=False)
    )
    assert again.sandbox.pause_mode == pb.PAUSE_MODE_FILESYSTEM
    await lifecycle.sandboxes.ConnectSandbox(pb.ConnectSandboxRequest(**_ident(sandbox)))
    code, out = await run_command(sandbox, "cat /home/user/note")
    assert (code, out) == (0, "kept\n")


async def test_timeout_pauses_to_the_filesystem_when_auto_pause_memory_is_false(
    lifecycle: Client,
) -> None:
    sandbox = await _create(
        lifecycle, timeout_seconds=1, on_timeout=pb.TIMEOUT_ACTION_PAUSE, auto_pause_memory=False
    )
    await _write_and_start_ticker(sandbox)
    for _ in range(100):
        got = await lifecycle.sandboxes.GetSandbox(pb.GetSandboxRequest(**_ident(sandbox)))
        if got.sandbox.state == pb.SANDBOX_STATE_PAUSED:
            break
        await asyncio.sleep(0.05)
    assert got.sandbox.state == pb.SANDBOX_STATE_PAUSED
    assert got.sandbox.pause_mode == pb.PAUSE_MODE_FILESYSTEM
    assert _supervisors(lifecycle, sandbox.sandbox_id) == []
    connected = await lifecycle.sandboxes.ConnectSandbox(
        pb.ConnectSandboxRequest(**_ident(sandbox), timeout_seconds=60)
    )
    assert connected.resumed
    code, out = await run_command(sandbox, "cat /home/user/note")
    assert (code, out) == (0, "kept\n")
    # The default stays E2B's: a timeout pause keeps the memory.
    other = await _create(lifecycle, timeout_seconds=1, on_timeout=pb.TIMEOUT_ACTION_PAUSE)
    for _ in range(100):
        got = await lifecycle.sandboxes.GetSandbox(pb.GetSandboxRequest(**_ident(other)))
        if got.sandbox.state == pb.SANDBOX_STATE_PAUSED:
            break
        await asyncio.sleep(0.05)
    assert got.sandbox.pause_mode == pb.PAUSE_MODE_FULL
    assert _supervisors(lifecycle, other.sandbox_id)


async def test_filesystem_timeout_pause_refuses_auto_resume(lifecycle: Client) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _create(
            lifecycle, on_timeout=pb.TIMEOUT_ACTION_PAUSE, auto_pause_memory=False,
            auto_resume=True,
        )  # fmt: skip
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "autoPauseMemory" in (info.value.details() or "")
    assert not lifecycle.running.backend.live
    # Either alone is fine.
    await _create(lifecycle, on_timeout=pb.TIMEOUT_ACTION_PAUSE, auto_pause_memory=False)
    await _create(lifecycle, on_timeout=pb.TIMEOUT_ACTION_PAUSE, auto_resume=True)


async def test_kill_of_a_filesystem_paused_sandbox_frees_what_it_kept(lifecycle: Client) -> None:
    sandbox = await _create(lifecycle)
    backend = lifecycle.running.backend
    directory = backend.sandboxes_dir / sandbox.sandbox_id
    netns = sorted(NETNS_DIR.glob(f"*-{sandbox.sandbox_id}"))
    assert netns and directory.is_dir()
    await lifecycle.sandboxes.PauseSandbox(pb.PauseSandboxRequest(**_ident(sandbox), memory=False))
    # Kept while paused: the mounted root, the network namespace.
    assert mounting.SandboxRoot(directory, 0).root.is_mount()
    assert all(n.exists() for n in netns)
    await lifecycle.sandboxes.KillSandbox(pb.KillSandboxRequest(**_ident(sandbox)))
    assert not directory.exists()
    assert not any(n.exists() for n in netns)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await lifecycle.sandboxes.ConnectSandbox(pb.ConnectSandboxRequest(**_ident(sandbox)))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_resume_without_its_files_fails_and_it_stays_paused(lifecycle: Client) -> None:
    sandbox = await _create(lifecycle)
    backend = lifecycle.running.backend
    await lifecycle.sandboxes.PauseSandbox(pb.PauseSandboxRequest(**_ident(sandbox), memory=False))
    root = mounting.SandboxRoot(backend.sandboxes_dir / sandbox.sandbox_id, 0).root
    subprocess.run(["umount", "-l", str(root)], check=True)  # as after a reboot
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await lifecycle.sandboxes.ConnectSandbox(pb.ConnectSandboxRequest(**_ident(sandbox)))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "gone" in (info.value.details() or "")
    got = await lifecycle.sandboxes.GetSandbox(pb.GetSandboxRequest(**_ident(sandbox)))
    assert got.sandbox.state == pb.SANDBOX_STATE_PAUSED
    assert _supervisors(lifecycle, sandbox.sandbox_id) == []


async def test_filesystem_pause_without_isolation(tmp_path: Path) -> None:
    """`--isolation none`: the same promise on the sandbox's home directory and address."""
    settings = make_settings(tmp_path / "state", isolation="none")
    async with (
        serving(settings) as running_,
        grpc.aio.insecure_channel(f"127.0.0.1:{running_.port}") as channel,
    ):
        client = Client(running_, channel)
        sandbox = await _create(client)
        home = running_.backend.home_of(sandbox.sandbox_id)
        (home / "note").write_text("kept")
        url = f"http://{sandbox.endpoint_host}:{PICOD_PORT}/health"
        async with httpx.AsyncClient(timeout=5.0) as http:
            assert (await http.get(url)).status_code == 204
            await client.sandboxes.PauseSandbox(
                pb.PauseSandboxRequest(**_ident(sandbox), memory=False)
            )
            assert _supervisors(client, sandbox.sandbox_id) == []
            # a new connection: nothing listens (a kept-alive one may fail reading instead)
            with pytest.raises(httpx.ConnectError):
                async with httpx.AsyncClient(timeout=5.0) as fresh:
                    await fresh.get(url)
            connected = await client.sandboxes.ConnectSandbox(
                pb.ConnectSandboxRequest(**_ident(sandbox))
            )
            assert connected.resumed
            assert connected.sandbox.endpoint_host == sandbox.endpoint_host
            assert (await http.get(url)).status_code == 204
        assert (home / "note").read_text() == "kept"
        assert _supervisors(client, sandbox.sandbox_id)
    _assert_no_leak(tmp_path / "state")


async def test_interpreter_sandbox_from_the_pool_restarts_with_a_fresh_kernel(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path / "state", interpreter_pool_size=1)
    async with (
        serving(settings) as running_,
        grpc.aio.insecure_channel(f"127.0.0.1:{running_.port}") as channel,
    ):
        client = Client(running_, channel)
        if running_.backend._catalog().interpreter_missing:
            pytest.skip(running_.backend._catalog().interpreter_missing)
        await _wait_pool(client, "code-interpreter-v1", 1)
        # From the pool: its env vars arrived through picod's /init, not its environment.
        sandbox = await _create(
            client, template_id="code-interpreter-v1", env_vars={"GREETING": "hi"}
        )
        await _execute(sandbox, "x = 41\nopen('/home/user/note', 'w').write('kept')")
        await client.sandboxes.PauseSandbox(pb.PauseSandboxRequest(**_ident(sandbox), memory=False))
        connected = await client.sandboxes.ConnectSandbox(
            pb.ConnectSandboxRequest(**_ident(sandbox))
        )
        assert connected.resumed
        lines = await _execute(sandbox, "import os; print(open('/home/user/note').read(), "
                                        "os.environ['GREETING']); x")  # fmt: skip
        assert [x["text"] for x in lines if x["type"] == "stdout"] == ["kept hi\n"]
        errors = [x for x in lines if x["type"] == "error"]
        assert [e["name"] for e in errors] == ["NameError"], "the kernel starts afresh"
    _assert_no_leak(tmp_path / "state")


async def test_a_filesystem_paused_sandbox_survives_a_lifecycle_restart(tmp_path: Path) -> None:
    state, port = tmp_path / "state", _free_port()
    first = _start(state, port, "--pool-size", "0")
    try:
        await _serving(port)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.SandboxServiceStub(channel)
            kept, lost = [
                (await stub.CreateSandbox(
                    pb.CreateSandboxRequest(tenant=TENANT, env_vars={"GREETING": "hi"})
                )).sandbox
                for _ in range(2)
            ]  # fmt: skip
            for sandbox in (kept, lost):
                await _write_and_start_ticker(sandbox)
                await stub.PauseSandbox(pb.PauseSandboxRequest(**_ident(sandbox), memory=False))
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # `lost` loses its files meanwhile (as in a reboot): it cannot be adopted.
    lost_dir = state / "sandboxes" / lost.sandbox_id
    subprocess.run(["umount", "-l", str(mounting.SandboxRoot(lost_dir, 0).root)], check=True)

    second = _start(state, port, "--kill-on-exit", "on", "--pool-size", "0")
    try:
        await _serving(port)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.SandboxServiceStub(channel)
            listed = await stub.ListSandboxes(pb.ListSandboxesRequest(tenant=TENANT))
            assert [(s.sandbox_id, s.state, s.pause_mode) for s in listed.sandboxes] == [
                (kept.sandbox_id, pb.SANDBOX_STATE_PAUSED, pb.PAUSE_MODE_FILESYSTEM)
            ]
            assert not lost_dir.exists()
            connected = await stub.ConnectSandbox(pb.ConnectSandboxRequest(**_ident(kept)))
            assert connected.resumed
            assert connected.sandbox.envd_access_token == kept.envd_access_token
            code, out = await run_command(kept, 'cat /home/user/note; echo "$GREETING"')
            assert (code, out) == (0, "kept\nhi\n")
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0
    assert scan_supervisors(f"agentcube-sandbox:{state.resolve()}:") == []


# -- the store --------------------------------------------------------------------------


async def test_store_migrates_a_database_from_before_pause_modes(tmp_path: Path) -> None:
    path = tmp_path / "lifecycle.sqlite3"
    old_columns = (
        "sandbox_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, template_id TEXT NOT NULL, "
        "alias TEXT NOT NULL, metadata TEXT NOT NULL, env_vars TEXT NOT NULL, "
        "started_at REAL NOT NULL, end_at REAL NOT NULL, state INTEGER NOT NULL, "
        "cpu_count INTEGER NOT NULL, memory_mb INTEGER NOT NULL, "
        "disk_size_mb INTEGER NOT NULL, envd_version TEXT NOT NULL, "
        "endpoint_host TEXT NOT NULL, on_timeout INTEGER NOT NULL, "
        "auto_resume INTEGER NOT NULL, secure INTEGER NOT NULL, "
        "allow_internet_access INTEGER NOT NULL, end_reason TEXT NOT NULL, "
        "idempotency_key TEXT NOT NULL, pid INTEGER NOT NULL, pid_start INTEGER NOT NULL, "
        "pooled INTEGER NOT NULL"
    )
    with sqlite3.connect(path) as conn:
        conn.execute(f"CREATE TABLE sandboxes ({old_columns})")
        conn.execute(
            "INSERT INTO sandboxes VALUES ('old1', 't', 'base', '', '{}', ?, 1.0, 2.0, ?, 2, "
            "512, 0, '0.6.13', '10.0.0.1', 2, 0, 1, 1, '', '', 123, 456, 0)",
            (json.dumps({"A": "b"}), int(State.PAUSED)),
        )
    conn.close()
    store = Store(path)
    await store.open(prune_before=0.0)
    try:
        (row,) = await store.load_live()
        # Written before the columns: public, and paused the only way there was (SIGSTOP).
        assert row.sandbox.allow_public_traffic
        assert row.sandbox.pause_mode is PauseMode.FULL
        assert row.sandbox.timeout_pause_mode is PauseMode.FULL
        assert (row.pid, row.pid_start, row.sandbox.env_vars) == (123, 456, {"A": "b"})
        fs = replace(row.sandbox, pause_mode=PauseMode.FILESYSTEM,
                     timeout_pause_mode=PauseMode.FILESYSTEM)  # fmt: skip
        await store.put(replace(row, sandbox=fs, pid=NO_PROCESS, pid_start=NO_PROCESS))
        again = await store.get("old1")
        assert again is not None
        assert again.sandbox.pause_mode is PauseMode.FILESYSTEM
        assert again.sandbox.timeout_pause_mode is PauseMode.FILESYSTEM
        assert again.pid == NO_PROCESS
    finally:
        await store.close()


# -- the edge's parsing and answers ------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [({}, None), ({"autoPauseMemory": True}, True), ({"autoPauseMemory": False}, False)],
)
def test_create_request_carries_auto_pause_memory(body: dict[str, Any], field: object) -> None:
    request = rest_requests.create_request(
        {"templateID": "base", "autoPause": True, **body}, "t", v2=True, idempotency_key=None
    )
    assert request.HasField("auto_pause_memory") is (field is not None)
    if field is not None:
        assert request.auto_pause_memory is field


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"autoPauseMemory": False, "autoResume": {"enabled": True}}, "autoResume cannot"),
        ({"autoPauseMemory": "no"}, "autoPauseMemory must be a boolean"),
        ({"autoPauseMemory": 0}, "autoPauseMemory must be a boolean"),
    ],
)
def test_create_request_refuses(body: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        rest_requests.create_request(
            {"templateID": "base", "autoPause": True, **body}, "t", v2=True, idempotency_key=None
        )


def test_create_request_allows_auto_resume_with_a_full_or_disabled_pause() -> None:
    for body in (
        {"autoPauseMemory": True, "autoResume": {"enabled": True}},
        {"autoPauseMemory": False, "autoResume": {"enabled": False}},
    ):
        rest_requests.create_request({"templateID": "base", **body}, "t", True, None)


@pytest.mark.parametrize(
    ("body", "memory"),
    [
        ({}, None),
        ({"memory": True}, True),
        ({"memory": False}, False),
        ({"memory": False, "requireHealthyGuest": True}, False),
    ],
)
def test_pause_request(body: dict[str, Any], memory: bool | None) -> None:
    request = rest_requests.pause_request(body, "abc", "t")
    assert (request.sandbox_id, request.tenant) == ("abc", "t")
    assert request.HasField("memory") is (memory is not None)
    if memory is not None:
        assert request.memory is memory


@pytest.mark.parametrize("body", [{"memory": "false"}, {"memory": 0}, {"requireHealthyGuest": 1}])
def test_pause_request_refuses_wrong_types(body: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument, match="must be a boolean"):
        rest_requests.pause_request(body, "abc", "t")


@pytest.mark.parametrize(
    ("state", "mode", "shown"),
    [
        (pb.SANDBOX_STATE_PAUSED, pb.PAUSE_MODE_FILESYSTEM, "filesystem"),
        (pb.SANDBOX_STATE_PAUSED, pb.PAUSE_MODE_FULL, "full"),
        (pb.SANDBOX_STATE_PAUSED, pb.PAUSE_MODE_UNSPECIFIED, "full"),  # an older lifecycle
        (pb.SANDBOX_STATE_RUNNING, pb.PAUSE_MODE_UNSPECIFIED, None),
        (pb.SANDBOX_STATE_RUNNING, pb.PAUSE_MODE_FILESYSTEM, None),
    ],
)
def test_pause_mode_in_detail_and_list(state: int, mode: int, shown: str | None) -> None:
    sandbox = pb.Sandbox(sandbox_id="abc", template_id="base", state=state, pause_mode=mode)
    detail = rest_json.sandbox_detail_json(sandbox, "d")
    assert detail.get("pauseMode") == shown
    assert rest_json.listed_sandbox_json(sandbox).get("pauseMode") == shown
