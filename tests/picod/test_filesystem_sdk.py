"""The `filesystem.Filesystem` RPCs through the real E2B SDK (sync and async)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import httpx
import pytest
from e2b import AsyncSandbox, FileType, Sandbox
from e2b.exceptions import FileNotFoundException, InvalidArgumentException, SandboxException

if TYPE_CHECKING:
    from conftest import PicodProcess


def test_get_info_of_file_and_directory(
    sync_sandbox: Sandbox, workdir: str, picod_sdk_env: PicodProcess
) -> None:
    sync_sandbox.files.write(f"{workdir}/f.txt", "four")
    info = sync_sandbox.files.get_info(f"{workdir}/f.txt")
    assert info.name == "f.txt"
    assert info.type == FileType.FILE
    assert info.path == str(picod_sdk_env.home / workdir / "f.txt")
    assert info.size == 4
    assert (info.mode, info.permissions) == (0o644, "-rw-r--r--")
    assert info.owner and info.group
    assert info.modified_time.timestamp() == pytest.approx(
        (picod_sdk_env.home / workdir / "f.txt").stat().st_mtime, abs=0.001
    )
    assert info.symlink_target is None
    directory = sync_sandbox.files.get_info(workdir)
    assert directory.type == FileType.DIR
    # envd reports FileMode.Perm() in `mode` and Go's FileMode.String() in `permissions`.
    (picod_sdk_env.home / workdir).chmod(0o755)
    directory = sync_sandbox.files.get_info(workdir)
    assert (directory.mode, directory.permissions) == (0o755, "drwxr-xr-x")


def test_symlinks_describe_their_target(
    sync_sandbox: Sandbox, workdir: str, picod_sdk_env: PicodProcess
) -> None:
    base = picod_sdk_env.home / workdir
    (base / "dir").mkdir()
    (base / "to-dir").symlink_to("dir")
    (base / "dangling").symlink_to("nowhere")
    info = sync_sandbox.files.get_info(f"{workdir}/to-dir")
    assert info.type == FileType.SYMLINK  # the SDK maps is_symlink to SYMLINK
    assert info.symlink_target == str(base / "dir")
    assert info.permissions == "Lrwxrwxrwx"
    dangling = sync_sandbox.files.get_info(f"{workdir}/dangling")
    assert dangling.type == FileType.SYMLINK
    assert dangling.symlink_target == str(base / "nowhere")
    names = {e.name: e.type for e in sync_sandbox.files.list(workdir)}
    assert names == {"dir": FileType.DIR, "to-dir": FileType.SYMLINK, "dangling": FileType.SYMLINK}


def test_list_depth(sync_sandbox: Sandbox, workdir: str) -> None:
    sync_sandbox.files.write(f"{workdir}/a/b/c/d.txt", "x")
    sync_sandbox.files.write(f"{workdir}/top.txt", "x")
    one = [e.name for e in sync_sandbox.files.list(workdir)]
    assert one == ["a", "top.txt"]
    two = [e.path.split(f"{workdir}/")[1] for e in sync_sandbox.files.list(workdir, depth=2)]
    assert two == ["a", "a/b", "top.txt"]
    four = [e.path.split(f"{workdir}/")[1] for e in sync_sandbox.files.list(workdir, depth=9)]
    assert four == ["a", "a/b", "a/b/c", "a/b/c/d.txt", "top.txt"]
    with pytest.raises(InvalidArgumentException):
        sync_sandbox.files.list(workdir, depth=0)  # refused by the SDK itself


def test_list_depth_zero_on_the_wire_means_one(picod_sdk_env: PicodProcess, workdir: str) -> None:
    (picod_sdk_env.home / workdir / "x" / "y").mkdir(parents=True)
    r = httpx.post(
        f"{picod_sdk_env.url}/filesystem.Filesystem/ListDir",
        json={"path": workdir, "depth": 0},
        headers={"connect-protocol-version": "1"},
    )
    assert r.status_code == 200
    assert [e["name"] for e in r.json()["entries"]] == ["x"]


def test_exists_make_dir_rename_remove(sync_sandbox: Sandbox, workdir: str) -> None:
    assert sync_sandbox.files.exists(workdir)
    assert not sync_sandbox.files.exists(f"{workdir}/nope")
    assert sync_sandbox.files.make_dir(f"{workdir}/p/q/r") is True
    assert sync_sandbox.files.make_dir(f"{workdir}/p/q/r") is False  # already exists
    sync_sandbox.files.write(f"{workdir}/p/q/r/f", "data")
    moved = sync_sandbox.files.rename(f"{workdir}/p/q/r/f", f"{workdir}/new/parent/g")
    assert moved.name == "g" and moved.type == FileType.FILE
    assert sync_sandbox.files.read(f"{workdir}/new/parent/g") == "data"
    sync_sandbox.files.rename(f"{workdir}/p", f"{workdir}/p2")  # directories too
    assert sync_sandbox.files.exists(f"{workdir}/p2/q/r")
    sync_sandbox.files.remove(f"{workdir}/p2")  # a whole tree
    sync_sandbox.files.remove(f"{workdir}/new/parent/g")
    assert [e.name for e in sync_sandbox.files.list(workdir)] == ["new"]


def test_absolute_and_home_relative_paths(
    sync_sandbox: Sandbox, workdir: str, picod_sdk_env: PicodProcess
) -> None:
    absolute = str(picod_sdk_env.home / workdir / "abs.txt")
    sync_sandbox.files.write(absolute, "a")
    assert sync_sandbox.files.read(f"~/{workdir}/abs.txt") == "a"
    assert sync_sandbox.files.get_info(f"{workdir}/../{workdir}/abs.txt").path == absolute


def test_errors(sync_sandbox: Sandbox, workdir: str) -> None:
    sync_sandbox.files.write(f"{workdir}/file", "x")
    with pytest.raises(FileNotFoundException):
        sync_sandbox.files.get_info(f"{workdir}/missing")
    with pytest.raises(FileNotFoundException):
        sync_sandbox.files.list(f"{workdir}/missing")
    with pytest.raises(InvalidArgumentException):
        sync_sandbox.files.list(f"{workdir}/file")
    sync_sandbox.files.remove(f"{workdir}/missing")  # idempotent, as envd
    with pytest.raises(FileNotFoundException):
        sync_sandbox.files.rename(f"{workdir}/missing", f"{workdir}/else")
    with pytest.raises(InvalidArgumentException):
        sync_sandbox.files.make_dir(f"{workdir}/file")  # a file is in the way
    with pytest.raises(InvalidArgumentException):
        sync_sandbox.files.make_dir(f"{workdir}/file/sub")  # not a directory
    with pytest.raises(SandboxException):
        sync_sandbox.files.get_info("")  # empty path
    with pytest.raises(SandboxException):
        sync_sandbox.files.get_info(f"{workdir}/nul\0byte")
    assert sync_sandbox.files.exists(workdir)  # still serving


def test_non_utf8_names_are_skipped_not_fatal(
    sync_sandbox: Sandbox, workdir: str, picod_sdk_env: PicodProcess
) -> None:
    base = os.fsencode(picod_sdk_env.home / workdir)
    os.mkdir(base + b"/\xfe-dir")  # noqa: PTH102 - pathlib cannot name non-UTF-8 paths
    os.close(os.open(base + b"/\xfe-dir/inner", os.O_WRONLY | os.O_CREAT, 0o644))
    sync_sandbox.files.write(f"{workdir}/ok", "x")
    assert [e.name for e in sync_sandbox.files.list(workdir, depth=3)] == ["ok"]


async def test_async_filesystem(async_sandbox: AsyncSandbox, workdir: str) -> None:
    assert await async_sandbox.files.make_dir(f"{workdir}/d") is True
    await async_sandbox.files.write(f"{workdir}/d/f", "x")
    entries = await async_sandbox.files.list(f"{workdir}/d")
    assert [e.name for e in entries] == ["f"]
    assert await async_sandbox.files.exists(f"{workdir}/d/f")
    info = await async_sandbox.files.rename(f"{workdir}/d/f", f"{workdir}/d/g")
    assert info.name == "g"
    await async_sandbox.files.remove(f"{workdir}/d")
    assert not await async_sandbox.files.exists(f"{workdir}/d")
    with pytest.raises(FileNotFoundException):
        await async_sandbox.files.get_info(f"{workdir}/d")
