"""Template code-interpreter-v1: picod and the code interpreter in one sandbox."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import grpc
import httpx
import pytest

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc.lifecycle.processes import tree
from extproc.lifecycle.server import serving
from extproc.lifecycle.templates import Catalog

from .conftest import Client, _assert_no_leak, make_settings
from .helpers import health, in_hub, run_command, running

TENANT = "team-a"
INTERPRETER_PORT = 49999


async def _execute(sandbox: pb.Sandbox, code: str) -> list[dict[str, object]]:
    url = f"http://{sandbox.endpoint_host}:{INTERPRETER_PORT}/execute"
    headers = {"X-Access-Token": sandbox.envd_access_token}

    def post() -> httpx.Response:
        with httpx.Client(timeout=15.0) as client:
            return client.post(url, json={"code": code}, headers=headers)

    response = await in_hub(sandbox.sandbox_id, post)
    assert response.status_code == 200, response.text
    return [json.loads(line) for line in response.text.splitlines() if line]


async def _wait_pool(client: Client, template_id: str, size: int) -> None:
    pool = client.running.backend.pools[template_id]
    async with asyncio.timeout(20):
        while pool.ready < size:
            await asyncio.sleep(0.05)


async def test_code_interpreter_executes_and_kill_leaves_nothing(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state", interpreter_pool_size=1)
    async with (
        serving(settings) as running_,
        grpc.aio.insecure_channel(f"127.0.0.1:{running_.port}") as channel,
    ):
        client = Client(running_, channel)
        await _wait_pool(client, "code-interpreter-v1", 1)
        warm = {e.sandbox.sandbox_id for e in running_.backend.pools["code-interpreter-v1"]._ready}
        reply = await client.sandboxes.CreateSandbox(
            pb.CreateSandboxRequest(
                tenant=TENANT, template_id="code-interpreter", env_vars={"GREETING": "hi"}
            )
        )
        sandbox = reply.sandbox
        assert sandbox.template_id == "code-interpreter-v1"
        assert sandbox.sandbox_id in warm, "the Create did not take the warm sandbox"
        # Reachable as soon as Create returns (the SDK does no readiness wait).
        lines = await _execute(sandbox, "1+1")
        results = [x for x in lines if x["type"] == "result"]
        assert [r["text"] for r in results] == ["2"]
        assert results[0]["is_main_result"] is True
        assert lines[-1] == {"type": "end_of_execution"}
        # The create's env vars reach the kernel through picod's /envs.
        lines = await _execute(sandbox, "import os; print(os.environ['GREETING'])")
        assert [x["text"] for x in lines if x["type"] == "stdout"] == ["hi\n"]
        # Pause stops both servers and the kernel; Connect resumes all of them.
        ref = {"sandbox_id": sandbox.sandbox_id, "tenant": TENANT}
        await client.sandboxes.PauseSandbox(pb.PauseSandboxRequest(**ref))
        await client.sandboxes.ConnectSandbox(pb.ConnectSandboxRequest(**ref))
        assert [x["text"] for x in await _execute(sandbox, "2*3") if x["type"] == "result"] == ["6"]
        assert await health(sandbox) == 204
        assert (await run_command(sandbox, "echo $HOME"))[1] == "/home/user\n"

        entry = client.running.backend.live[sandbox.sandbox_id]
        pids = tree(entry.process.pid)
        assert len(pids) >= 4  # init, picod, interpreter, kernel
        await client.sandboxes.KillSandbox(
            pb.KillSandboxRequest(sandbox_id=sandbox.sandbox_id, tenant=TENANT)
        )
        assert not any(running(p) for p in pids)
        assert not Path(client.running.backend.home_of(sandbox.sandbox_id)).exists()
    _assert_no_leak(tmp_path / "state")


async def test_a_server_dying_ends_the_sandbox(lifecycle: Client) -> None:
    reply = await lifecycle.sandboxes.CreateSandbox(
        pb.CreateSandboxRequest(tenant=TENANT, template_id="code-interpreter-v1")
    )
    sandbox = reply.sandbox
    entry = lifecycle.running.backend.live[sandbox.sandbox_id]
    pids = tree(entry.process.pid)
    servers = [p for p in pids if "interpreter" in _argv(p)[:4]]
    assert len(servers) == 1, [_argv(p)[:4] for p in pids]
    os.kill(servers[0], signal.SIGKILL)  # the interpreter alone; picod is left running
    async with asyncio.timeout(10):
        while sandbox.sandbox_id in lifecycle.running.backend.live or any(map(running, pids)):
            await asyncio.sleep(0.02)
    assert await health(sandbox) == 0


def _argv(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return []


async def test_pool_sandbox_that_dies_is_freed_at_once(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state", pool_size=1)
    async with serving(settings) as running_:
        backend = running_.backend
        pool = backend.pools["base"]
        async with asyncio.timeout(20):
            while pool.ready < 1:
                await asyncio.sleep(0.02)
        (entry,) = list(pool._ready)
        home = backend.home_of(entry.sandbox.sandbox_id)
        assert home.exists()
        entry.process.kill()
        async with asyncio.timeout(10):
            while home.exists() or entry in pool._ready:
                await asyncio.sleep(0.02)
        assert entry.sandbox.endpoint_host not in _used_hosts(backend)
    _assert_no_leak(tmp_path / "state")


def _used_hosts(backend: object) -> set[str]:
    from extproc.lifecycle.networking import addresses_of

    return {addresses_of(i)[1] for i in backend.isolation.networks._used}  # type: ignore[attr-defined]


async def test_unavailable_interpreter_is_refused(lifecycle: Client) -> None:
    catalog = lifecycle.running.backend.catalog
    assert catalog is not None
    catalog.interpreter_missing = "the code interpreter is not installed here"
    for name in ("code-interpreter-v1", "code-interpreter"):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await lifecycle.sandboxes.CreateSandbox(
                pb.CreateSandboxRequest(tenant=TENANT, template_id=name)
            )
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "not installed" in info.value.details()
    assert not lifecycle.running.backend.live


def test_old_templates_file_gets_the_interpreter(tmp_path: Path) -> None:
    old = {
        "template_id": "code-interpreter-v1", "aliases": ["code-interpreter"],
        "memory_mb": 1024, "ports": [49999], "available": False,
        "unavailable_reason": "the code interpreter is not installed",
    }  # fmt: skip
    path = tmp_path / "templates.json"
    path.write_text(json.dumps({"templates": [old]}))
    template, _ = Catalog.load(path).resolve("code-interpreter", "")
    assert template.interpreter and template.available and not template.unavailable_reason
