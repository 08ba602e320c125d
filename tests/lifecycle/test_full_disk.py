"""A full disk under the state directory: clear errors, nothing half-made, no corruption.

The state directory is a small tmpfs (we run as root); the base rootfs stays in the shared
cache, outside it. `_fill` writes zeros until ENOSPC, so the disk is really full.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2_grpc as pb_grpc
from extproc.cli import main as cli
from extproc.core.errors import ResourceExhausted
from extproc.edge.keyfiles import CONFIG_FILE, SECRET_FILE, read_key_index
from extproc.lifecycle.networking import NETNS_DIR, netns_prefix
from extproc.lifecycle.processes import scan_supervisors
from extproc.lifecycle.sandboxes import Sandbox, State
from extproc.lifecycle.server import serving
from extproc.lifecycle.store import Row, Store

from .conftest import make_settings
from .helpers import running

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs: needs root")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        # After a failed test: what the service would have killed at its stop.
        for pid in scan_supervisors(f"agentcube-sandbox:{(mount / 'state').resolve()}:"):
            os.killpg(pid, signal.SIGKILL)
        for netns in NETNS_DIR.glob(netns_prefix(mount / "state") + "-*"):
            subprocess.run(["ip", "netns", "delete", netns.name], check=False)
        subprocess.run(["umount", "-l", str(mount)], check=True)


def _fill(disk: Path) -> Path:
    filler = disk / "filler"
    block = b"\0" * (1 << 20)
    with filler.open("wb", buffering=0) as out:
        for size in (1 << 20, 4096, 512):
            try:
                while True:
                    out.write(block[:size])
            except OSError:
                pass
    return filler


def _sandbox(sandbox_id: str, metadata_bytes: int = 0) -> Sandbox:
    return Sandbox(
        sandbox_id=sandbox_id, template_id="base", alias="", tenant="t",
        metadata={"pad": "x" * metadata_bytes}, env_vars={}, started_at=1.0, end_at=2.0,
        state=State.RUNNING, cpu_count=1, memory_mb=64, disk_size_mb=64, envd_version="0",
        envd_access_token="", endpoint_host="127.100.0.2",
    )  # fmt: skip


def _stored_end_at(db: Path, sandbox_id: str) -> float:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT end_at FROM sandboxes WHERE sandbox_id = ?", (sandbox_id,))
        return float(row.fetchone()[0])


def _integrity(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


async def test_store_write_on_a_full_disk_fails_clearly_and_the_writer_goes_on(
    small_disk: Path,
) -> None:
    db = small_disk / "lifecycle.db"
    store = Store(db)
    await store.open(prune_before=0)
    try:
        await store.put(Row(_sandbox("before"), 1, 1, pooled=False))
        filler = _fill(small_disk)
        written, error = [], None
        for i in range(64):  # the WAL has to grow at some point: 64 x 256 KiB
            try:
                await store.put(Row(_sandbox(f"full{i}", 256 * 1024), 1, 1, pooled=False))
                written.append(f"full{i}")
            except ResourceExhausted as exc:
                error = exc
                break
        assert error is not None, "writes never hit the full disk"
        assert "no space" in error.message
        assert isinstance(error.__cause__, sqlite3.OperationalError)
        filler.unlink()
        # Not wedged: the next write commits, and the failed one left nothing behind.
        await store.put(Row(_sandbox("after"), 1, 1, pooled=False))
        live = {r.sandbox.sandbox_id for r in await store.load_live()}
        assert live == {"before", "after", *written}
    finally:
        await store.close()
    assert _integrity(db) == "ok"


def _keys(state: Path, *args: str) -> int:
    return cli(["keys", "create", "--state-dir", str(state), *args])


def test_keys_create_into_a_full_disk_fails_clearly_and_keeps_the_keys(
    small_disk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = small_disk / "state"
    assert _keys(state, "--name", "first") == 0
    first = capsys.readouterr().out.strip()
    keys = state / "keys"
    before = {name: (keys / name).read_text() for name in (CONFIG_FILE, SECRET_FILE)}
    filler = _fill(small_disk)
    assert _keys(state, "--name", "second") == 1
    err = capsys.readouterr().err
    assert "no space left on device" in err and "Traceback" not in err
    for name, text in before.items():
        assert (keys / name).read_text() == text
        json.loads(text)
    assert sorted(p.name for p in keys.iterdir()) == sorted(before)  # no temp files left
    filler.unlink()
    assert _keys(state, "--name", "third") == 0
    entries = read_key_index(keys).entries.values()
    assert sorted(e.name for e in entries) == ["first", "third"]
    assert first.startswith("e2b_")


def _reap_survivors() -> None:
    """The first service's children outlive it on purpose (kill_on_exit off), as they would
    outlive a lifecycle process; the second one kills them, but only their parent, this
    test process, can reap them."""
    for child in gc.get_objects():
        popen = isinstance(child, subprocess.Popen) and child.returncode is None
        if popen and not running(child.pid):
            child.wait(timeout=5)


def _channel(port: int) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(f"127.0.0.1:{port}")


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return [line.split()[4] for line in lines if line.split()[4].startswith(prefix)]


@pytest.mark.slow
async def test_full_state_dir_gives_clear_errors_and_loses_nothing(small_disk: Path) -> None:
    state = small_disk / "state"
    db = state / "lifecycle.sqlite3"
    marker = f"agentcube-sandbox:{state.resolve()}:"
    ns_prefix = netns_prefix(state) + "-"

    def netns() -> set[str]:
        return {p.name for p in NETNS_DIR.glob(ns_prefix + "*")}

    settings = make_settings(state, kill_on_exit=False)
    async with serving(settings) as running, _channel(running.port) as channel:
        stub = pb_grpc.SandboxServiceStub(channel)
        kept = (await stub.CreateSandbox(pb.CreateSandboxRequest(tenant="t"))).sandbox
        doomed = (await stub.CreateSandbox(pb.CreateSandboxRequest(tenant="t"))).sandbox
        supervisors, namespaces = set(scan_supervisors(marker)), netns()
        mounts = _mounts_under(state)
        filler = _fill(small_disk)

        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stub.CreateSandbox(pb.CreateSandboxRequest(tenant="t"))
        code, details = failed.value.code(), failed.value.details() or ""
        assert code in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)
        assert "no space" in details.lower(), details
        # Nothing half-made: no supervisor, namespace or mount of the failed create.
        assert set(scan_supervisors(marker)) == supervisors
        assert netns() == namespaces
        assert _mounts_under(state) == mounts
        made = {d.name for d in (state / "sandboxes").iterdir()}
        assert made == {kept.sandbox_id, doomed.sandbox_id}

        # SetTimeout and Kill: succeed, or fail with a clear error; memory follows SQLite.
        timeout = pb.SetSandboxTimeoutRequest(
            sandbox_id=kept.sandbox_id, tenant="t", timeout_seconds=1234
        )
        try:
            await stub.SetSandboxTimeout(timeout)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, exc.details()
        got = await stub.GetSandbox(pb.GetSandboxRequest(sandbox_id=kept.sandbox_id, tenant="t"))
        # Checked last, so that the rest is still exercised (see docs/reliability.md).
        served_end, stored_end = got.sandbox.end_at.seconds, _stored_end_at(db, kept.sandbox_id)
        try:
            await stub.KillSandbox(pb.KillSandboxRequest(sandbox_id=doomed.sandbox_id, tenant="t"))
        except grpc.aio.AioRpcError as exc:
            assert exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, exc.details()

        filler.unlink()
        # Still serving, without a restart.
        await stub.SetSandboxTimeout(timeout)
        fresh = (await stub.CreateSandbox(pb.CreateSandboxRequest(tenant="t"))).sandbox
        listed = await stub.ListSandboxes(pb.ListSandboxesRequest(tenant="t"))
        ids = [s.sandbox_id for s in listed.sandboxes]
        assert sorted(ids) == sorted([kept.sandbox_id, fresh.sandbox_id])
        await stub.KillSandbox(pb.KillSandboxRequest(sandbox_id=fresh.sandbox_id, tenant="t"))
        end_at = (
            await stub.GetSandbox(pb.GetSandboxRequest(sandbox_id=kept.sandbox_id, tenant="t"))
        ).sandbox.end_at.seconds

    assert _integrity(db) == "ok"
    with sqlite3.connect(db) as conn:
        rows = dict(conn.execute("SELECT sandbox_id, state FROM sandboxes").fetchall())
    assert rows == {
        kept.sandbox_id: int(State.RUNNING),
        doomed.sandbox_id: int(State.ENDED),
        fresh.sandbox_id: int(State.ENDED),
    }
    assert int(_stored_end_at(db, kept.sandbox_id)) == end_at

    # A restart re-adopts what was live, once.
    async with serving(make_settings(state)) as running, _channel(running.port) as channel:
        stub = pb_grpc.SandboxServiceStub(channel)
        listed = await stub.ListSandboxes(pb.ListSandboxesRequest(tenant="t"))
        assert [s.sandbox_id for s in listed.sandboxes] == [kept.sandbox_id]
        assert listed.sandboxes[0].end_at.seconds == end_at
    _reap_survivors()
    assert scan_supervisors(marker) == []
    assert netns() == set()
    assert served_end == int(stored_end), "a failed SetTimeout left memory and SQLite apart"
