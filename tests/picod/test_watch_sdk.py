"""Directory watches through the real SDK: the sync poller and the async stream."""

from __future__ import annotations

import asyncio
import struct
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from e2b import AsyncSandbox, FilesystemEvent, FilesystemEventType, Sandbox
from e2b.exceptions import FileNotFoundException, InvalidArgumentException, SandboxException

if TYPE_CHECKING:
    from conftest import PicodProcess

C, W, R, N, M = (
    FilesystemEventType.CREATE,
    FilesystemEventType.WRITE,
    FilesystemEventType.REMOVE,
    FilesystemEventType.RENAME,
    FilesystemEventType.CHMOD,
)


@pytest.fixture
def workdir(picod_sdk_env: PicodProcess) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    (picod_sdk_env.home / name).mkdir(parents=True)
    yield name


def pairs(events: list[FilesystemEvent]) -> list[tuple[str, FilesystemEventType]]:
    # CHMOD comes from chown when picod runs as root; envd emits it too, but it is noise here.
    return [(e.name, e.type) for e in events if e.type != M]


def test_sync_watch_reports_create_write_rename_remove(
    sync_sandbox: Sandbox, workdir: str, picod_sdk_env: PicodProcess
) -> None:
    base = picod_sdk_env.home / workdir
    sync_sandbox.files.write(f"{workdir}/existing.txt", "old")
    handle = sync_sandbox.files.watch_dir(workdir)
    assert handle.get_new_events() == []
    sync_sandbox.files.write(f"{workdir}/existing.txt", "replaced")  # overwrite: WRITE only
    sync_sandbox.files.write(f"{workdir}/new.txt", "n")  # new file: CREATE then WRITE
    (base / "new.txt").rename(base / "moved.txt")
    sync_sandbox.files.remove(f"{workdir}/moved.txt")
    (base / "sub").mkdir()
    (base / "sub" / "not-reported.txt").write_text("x")  # not recursive
    assert pairs(handle.get_new_events()) == [
        ("existing.txt", W),
        ("new.txt", C),
        ("new.txt", W),
        ("new.txt", N),
        ("moved.txt", C),
        ("moved.txt", R),
        ("sub", C),
    ]
    assert handle.get_new_events() == []  # drained
    handle.stop()
    with pytest.raises(SandboxException):
        handle.get_new_events()


def test_sync_watch_recursive_with_entries(
    sync_sandbox: Sandbox, workdir: str, picod_sdk_env: PicodProcess
) -> None:
    base = picod_sdk_env.home / workdir
    (base / "pre").mkdir()
    handle = sync_sandbox.files.watch_dir(workdir, recursive=True, include_entry=True)
    (base / "pre" / "a.txt").write_text("a")
    (base / "new" / "deeper").mkdir(parents=True)
    handle.get_new_events()  # the new directories get their watches as their events are read
    (base / "new" / "deeper" / "b.txt").write_text("b")
    events = [e for e in handle.get_new_events() if e.type != M]
    assert pairs(events) == [("new/deeper/b.txt", C), ("new/deeper/b.txt", W)]
    assert events[0].entry is not None
    assert events[0].entry.path == str(base / "new" / "deeper" / "b.txt")
    (base / "pre" / "a.txt").unlink()
    removed = handle.get_new_events()
    assert pairs(removed) == [("pre/a.txt", R)] and removed[0].entry is None
    handle.stop()


def test_sync_watch_errors(
    sync_sandbox: Sandbox, workdir: str, picod_sdk_env: PicodProcess
) -> None:
    with pytest.raises(FileNotFoundException):
        sync_sandbox.files.watch_dir(f"{workdir}/missing")
    (picod_sdk_env.home / workdir / "file").write_text("x")
    with pytest.raises(InvalidArgumentException):
        sync_sandbox.files.watch_dir(f"{workdir}/file")
    for method in ("GetWatcherEvents", "RemoveWatcher"):
        r = httpx.post(
            f"{picod_sdk_env.url}/filesystem.Filesystem/{method}",
            json={"watcherId": "no-such-watcher"},
            headers={"connect-protocol-version": "1"},
        )
        assert (r.status_code, r.json()["code"]) == (404, "not_found")


async def test_async_watch_stream(async_sandbox: AsyncSandbox, workdir: str) -> None:
    seen: list[FilesystemEvent] = []
    sub_created = asyncio.Event()
    arrived = asyncio.Event()

    def on_event(event: FilesystemEvent) -> None:
        seen.append(event)
        if (event.name, event.type) == ("sub", C):
            sub_created.set()
        if (event.name, event.type) == ("sub/b.txt", R):
            arrived.set()

    handle = await async_sandbox.files.watch_dir(
        workdir, on_event, recursive=True, include_entry=True
    )
    await async_sandbox.files.write(f"{workdir}/a.txt", "a")
    await async_sandbox.files.make_dir(f"{workdir}/sub")
    # Wait until the new directory's CREATE arrived: the recursive watch is in place then.
    await asyncio.wait_for(sub_created.wait(), 10)
    await async_sandbox.files.write(f"{workdir}/sub/b.txt", "b")
    await async_sandbox.files.remove(f"{workdir}/sub/b.txt")
    await asyncio.wait_for(arrived.wait(), 10)
    await handle.stop()
    assert pairs(seen) == [
        ("a.txt", C),
        ("a.txt", W),
        ("sub", C),
        ("sub/b.txt", C),
        ("sub/b.txt", W),
        ("sub/b.txt", R),
    ]
    assert seen[0].entry is not None and seen[0].entry.name == "a.txt"


async def test_async_watch_missing_dir(async_sandbox: AsyncSandbox, workdir: str) -> None:
    with pytest.raises(FileNotFoundException):
        await async_sandbox.files.watch_dir(f"{workdir}/missing", lambda e: None)


def _envelope(payload: bytes) -> bytes:
    return struct.pack(">BI", 0, len(payload)) + payload


def _inotify_fds(pid: int) -> int:
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            count += str(fd.readlink()) == "anon_inode:inotify"
        except OSError:
            continue
    return count


def test_watch_stream_keepalive_and_disconnect(picod_sdk_env: PicodProcess, workdir: str) -> None:
    pid = picod_sdk_env.proc.pid
    before = _inotify_fds(pid)
    body = _envelope(b'{"path": "%s"}' % workdir.encode())
    with httpx.stream(
        "POST",
        f"{picod_sdk_env.url}/filesystem.Filesystem/WatchDir",
        content=body,
        headers={
            "content-type": "application/connect+json",
            "connect-protocol-version": "1",
            "keepalive-ping-interval": "0.2",
        },
        timeout=10,
    ) as r:
        assert r.status_code == 200
        chunks = r.iter_bytes()
        messages: list[bytes] = []
        buffer = b""
        while len(messages) < 2:
            buffer += next(chunks)
            while len(buffer) >= 5 and len(buffer) >= 5 + int.from_bytes(buffer[1:5], "big"):
                size = int.from_bytes(buffer[1:5], "big")
                messages.append(buffer[5 : 5 + size])
                buffer = buffer[5 + size :]
        assert messages == [b'{"start":{}}', b'{"keepalive":{}}']
        assert _inotify_fds(pid) == before + 1
    # The client is gone: picod closes the watch at once (not a keepalive later).
    deadline = time.monotonic() + 5
    while _inotify_fds(pid) != before and time.monotonic() < deadline:
        time.sleep(0.02)  # polling another process's fd table: nothing to await
    assert _inotify_fds(pid) == before
