"""Sandboxes forked from the zygote (extproc/picod/zygote.py, sandbox_init.py): what a fork
keeps and drops, what root inside a sandbox can reach of its init and picod, and the
lifecycle service's bookkeeping around the fork (a dead zygote, a cancelled fork, the
priority of a pool refill)."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2_grpc as pb_grpc
from extproc.lifecycle import zygote as zygote_client
from extproc.lifecycle.local import LocalBackend
from extproc.lifecycle.pooling import REFILL_NICE
from extproc.lifecycle.processes import scan_supervisors, tree
from extproc.lifecycle.sandboxes import CreateSpec
from extproc.lifecycle.server import serving
from lifecycle.conftest import Client, make_settings
from lifecycle.helpers import health, run_command, running

TENANT = "tenant-z"


async def _create(client: Client, **kwargs: Any) -> pb.Sandbox:
    reply = await client.sandboxes.CreateSandbox(pb.CreateSandboxRequest(tenant=TENANT, **kwargs))
    return reply.sandbox


def _backend(client: Client) -> LocalBackend:
    backend = client.running.backend
    assert isinstance(backend, LocalBackend)
    return backend


def _zygote(client: Client) -> zygote_client.Zygote:
    isolation = _backend(client).isolation
    assert isolation is not None and isolation.zygote is not None
    return isolation.zygote


def _fds(pid: int) -> dict[int, str]:
    found = {}
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            found[int(fd.name)] = str(fd.readlink())
        except OSError:
            continue  # closed while we looked (our own listing's, for one)
    return found


def _sockets(pid: int) -> set[str]:
    return {target for target in _fds(pid).values() if target.startswith("socket:")}


def _nice(pid: int) -> int:
    raw = Path(f"/proc/{pid}/stat").read_text()
    return int(raw[raw.rindex(")") + 2 :].split()[16])


async def test_a_sandbox_holds_no_fd_of_the_host(lifecycle: Client) -> None:
    sandbox = await _create(lifecycle)
    backend = _backend(lifecycle)
    init, picod = tree(backend.live[sandbox.sandbox_id].process.pid)[:2]
    init_fds = _fds(init)
    assert sorted(init_fds) == [0, 1, 2], init_fds  # stdio and nothing else
    assert init_fds[0] == "/dev/null"
    host_sockets = _sockets(os.getpid()) | _sockets(_zygote(lifecycle).pid or 0)
    state = str(backend.dir.resolve())
    for pid in (init, picod):
        for fd, target in _fds(pid).items():
            assert state not in target, f"{pid} fd {fd} is the host's {target}"
            assert target not in host_sockets, f"{pid} fd {fd} is a socket of the host's"
            if fd in (1, 2):
                assert target == "/var/log/agentcube-e2b.log"


async def test_root_inside_cannot_read_init_or_picod(lifecycle: Client) -> None:
    sandbox = await _create(lifecycle)
    script = (
        "sudo -n id -u; pid=$(pgrep -f 'extproc.cli picod' | head -1); "
        "for f in /proc/1/environ /proc/1/maps /proc/$pid/environ /proc/$pid/mem; do "
        "sudo -n dd if=$f of=/dev/null bs=1 count=1 2>/dev/null && echo $f readable; done; "
        "ps -o args= -p 1"
    )
    code, out = await run_command(sandbox, script)
    assert code == 0
    lines = out.split("\n")
    assert lines[0] == "0", "the probe did not run as root"
    assert "readable" not in out, out
    assert lines[1].startswith("agentcube-e2b-init agentcube-sandbox:"), out


async def test_init_reaps_orphans(lifecycle: Client) -> None:
    sandbox = await _create(lifecycle)
    # The inner shell exits at once: its `sleep` is re-parented to pid 1 and must not stay
    # a zombie when it ends.
    code, out = await run_command(
        sandbox, "sh -c 'sleep 0.2 & exit 0'; sleep 1; ps -eo stat= | grep -c '^Z' || true"
    )
    assert code == 0 and out.strip() == "0", out


async def test_the_zygote_never_holds_a_sandboxs_secrets(lifecycle: Client) -> None:
    secret = f"zygote-must-not-see-{uuid.uuid4().hex}"
    sandbox = await _create(lifecycle, env_vars={"TENANT_SECRET": secret})
    _, out = await run_command(sandbox, "echo $TENANT_SECRET")
    assert out.strip() == secret  # it did reach the sandbox
    pid = _zygote(lifecycle).pid
    memory = bytearray()
    with Path(f"/proc/{pid}/mem").open("rb", buffering=0) as mem:
        for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
            span, perms = line.split()[:2]
            if not perms.startswith("r") or "[vsyscall]" in line or "[vvar" in line:
                continue
            start, end = (int(x, 16) for x in span.split("-"))
            mem.seek(start)
            try:
                memory += mem.read(end - start)
            except OSError:
                continue
    assert len(memory) > 1 << 20, "read too little of the zygote to mean anything"
    assert secret.encode() not in memory
    assert sandbox.envd_access_token.encode() not in memory


async def test_a_dead_zygote_is_started_again(lifecycle: Client) -> None:
    zygote = _zygote(lifecycle)
    old = zygote.pid
    assert old is not None
    os.kill(old, signal.SIGKILL)
    while running(old):
        await asyncio.sleep(0.01)
    sandbox = await _create(lifecycle)
    assert await health(sandbox) == 204
    assert zygote.pid not in (None, old)


async def test_a_cancelled_fork_leaves_no_sandbox(
    lifecycle: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Create is cancelled while the zygote forks: what it forked is killed, not left
    running without a row (until a restart's stray scan)."""
    backend = _backend(lifecycle)
    receiving, go_on = asyncio.Event(), asyncio.Event()
    real_receive = zygote_client._receive

    async def held(*args: Any) -> tuple[bytes, list[int]]:
        receiving.set()
        await go_on.wait()
        return await real_receive(*args)

    monkeypatch.setattr(zygote_client, "_receive", held)
    marker = f"agentcube-sandbox:{backend.dir.resolve()}:"
    before = set(scan_supervisors(marker))
    spec = CreateSpec(tenant=TENANT, template="base", timeout_s=60)
    creating = asyncio.create_task(backend.create(spec))
    await receiving.wait()
    creating.cancel()
    await asyncio.sleep(0)
    go_on.set()
    with pytest.raises(asyncio.CancelledError):
        await creating
    for _ in range(100):
        if set(scan_supervisors(marker)) <= before:
            break
        await asyncio.sleep(0.05)
    assert set(scan_supervisors(marker)) <= before
    assert not backend.live


async def test_a_refill_starts_at_low_priority_until_taken(tmp_path: Path) -> None:
    async with (
        serving(make_settings(tmp_path / "state", pool_size=1)) as running_,
        grpc.aio.insecure_channel(f"127.0.0.1:{running_.port}") as channel,
    ):
        backend = running_.backend
        assert isinstance(backend, LocalBackend)
        pool = backend.pools["base"]
        while not pool.ready:
            await asyncio.sleep(0.05)
        warm = pool._ready[0]
        processes = tree(warm.process.pid)
        assert len(processes) >= 2  # init and picod
        assert {_nice(p) for p in processes} == {REFILL_NICE}
        stub = pb_grpc.SandboxServiceStub(channel)
        reply = await stub.CreateSandbox(pb.CreateSandboxRequest(tenant=TENANT))
        assert reply.sandbox.sandbox_id == warm.sandbox.sandbox_id
        assert {_nice(p) for p in tree(warm.process.pid)} == {0}
