"""One build step in a sandbox of its own, frozen into a layer when it succeeds.

A build step runs a stranger's code, so it gets exactly a sandbox's confinement
(`isolation.confine`: network and user namespaces, the overlay root over the layers below
it, cgroups; the internet as a sandbox created with the SDK's defaults has it), with the
step's script in place of picod (`spawning.Launch.command`). The sandbox never becomes
routable: it has no row, no event and no server. When the script ends, its writable layer
is the step's layer (`layers.LayerStore.freeze`) and everything else is released.

The host talks to the step through `/.agentcube-build` (`build_steps.STAGING`) at the top
of the new root, made by the host before the sandbox starts (any entry of that name from the
layers below is removed first): the COPY step's upload as `files.tar`, and from the script
its output as `log` and its exit code as `status`. The step can replace any of those with a
symlink or a FIFO, so the host opens them only through `_open_below`, which never follows a
link and never blocks; it reads them while the step runs (the log, for live build logs) and
after every process of the sandbox is gone. Before the freeze the staging directory and the
init's own log are removed, so they are not part of the template.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

from extproc.core.ids import new_sandbox_id
from extproc.core.tokens import access_token
from extproc.lifecycle import layers, spawning
from extproc.lifecycle.build_host import BuildHost
from extproc.lifecycle.build_steps import STAGING
from extproc.lifecycle.processes import Watched

_NAME = STAGING.strip("/")
_INIT_LOG = spawning.SERVER_LOG_INSIDE.lstrip("/")
_POLL_S = 0.25
_LOG_READ_LIMIT = 1024 * 1024


class StepTimedOut(Exception):
    pass


def _open_below(root: Path, relative: str) -> int | None:
    """An fd of the regular file `relative` below `root`, never through a symlink and never
    blocking on a FIFO; None if there is no such file."""
    parts = relative.split("/")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            below = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = below
        found = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
    except OSError:
        return None
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(found).st_mode):
        os.close(found)
        return None
    return found


def _remove_entry(directory_fd: int, name: str) -> None:
    """Remove `name` in the directory, whatever it is, never following a link."""
    try:
        mode = os.lstat(name, dir_fd=directory_fd).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        shutil.rmtree(name, dir_fd=directory_fd)
    else:
        os.unlink(name, dir_fd=directory_fd)


def _stage(root: Path, uid: int, files: Path | None) -> None:
    """Make the staging directory (owned by the sandbox's root) and put `files` in it."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _remove_entry(fd, _NAME)
        os.mkdir(_NAME, 0o700, dir_fd=fd)
        os.chown(_NAME, uid, uid, dir_fd=fd, follow_symlinks=False)
        if files is None:
            return
        staging = os.open(_NAME, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
            out = os.open("files.tar", flags, 0o600, dir_fd=staging)
            with os.fdopen(out, "wb") as target, files.open("rb") as source:
                shutil.copyfileobj(source, target, 1024 * 1024)
            os.chown("files.tar", uid, uid, dir_fd=staging, follow_symlinks=False)
        finally:
            os.close(staging)
    finally:
        os.close(fd)


def _unstage(root: Path) -> None:
    """Remove what the build put in the root but the template must not keep."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _remove_entry(fd, _NAME)
        log_dir, _, log_name = _INIT_LOG.rpartition("/")
        with contextlib.suppress(OSError):
            below = os.open(log_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            try:
                _remove_entry(below, log_name)
            finally:
                os.close(below)
    finally:
        os.close(fd)


def _exit_status(root: Path) -> int | None:
    fd = _open_below(root, f"{_NAME}/status")
    if fd is None:
        return None
    with os.fdopen(fd, "rb") as status:
        text = status.read(32).strip()
    return int(text) if text.isdigit() else None


class _LogTail:
    """The step's log as it grows, read through an fd opened safely once."""

    def __init__(self, root: Path, emit: Callable[[str], None]) -> None:
        self._root = root
        self._emit = emit
        self._fd: int | None = None
        self._pending = b""
        self._read = 0

    def poll(self) -> None:
        if self._fd is None:
            self._fd = _open_below(self._root, f"{_NAME}/log")
            if self._fd is None:
                return
        while self._read < _LOG_READ_LIMIT:
            data = os.read(self._fd, 65536)
            if not data:
                break
            self._read += len(data)
            self._pending += data
            *lines, self._pending = self._pending.split(b"\n")
            for line in lines:
                self._emit(line.decode(errors="replace"))

    def close(self) -> None:
        self.poll()
        if self._pending:
            self._emit(self._pending.decode(errors="replace"))
        if self._read >= _LOG_READ_LIMIT:
            self._emit(f"(output past {_LOG_READ_LIMIT} bytes not shown)")
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


async def run_step(
    backend: BuildHost,
    below: tuple[str, ...],
    script: str,
    *,
    files: Path | None,
    memory_mb: int,
    layer_id: str,
    tenant: str,
    emit: Callable[[str], None],
    timeout_s: float,
) -> int | None:
    """Run `script` as root in a build sandbox over the layers `below` (top first); on
    exit code 0 freeze its writable layer as `layer_id`. The exit code; None if the script
    left none (it was killed, or ran out of memory)."""
    isolation = backend.isolation
    if isolation is None:
        raise RuntimeError("build steps need namespace isolation")
    env_id = new_sandbox_id()
    directory = backend.sandboxes_dir / env_id
    layers.record_sandbox_layers(directory, below)
    trees = backend.layers.trees(below)
    confining = asyncio.ensure_future(
        asyncio.to_thread(isolation.confine, env_id, memory_mb, trees)
    )
    try:
        confined = await asyncio.shield(confining)
    except BaseException:
        with contextlib.suppress(BaseException):
            made = await confining
            os.close(made.userns_fd)
            await backend.free(env_id, made.link.address)
        await asyncio.to_thread(shutil.rmtree, directory, True)
        raise
    root = confined.paths.root
    process: Watched | None = None
    try:
        await asyncio.to_thread(_stage, root, confined.paths.uid_base, files)
        await asyncio.to_thread(isolation.allow_internet, env_id, confined.link.address, True)
        launch = spawning.Launch(
            env_id, access_token(backend.seed, env_id), confined.link.address,
            confined.paths, memory_mb, {}, netns=confined.link.netns_path,
            userns_fd=confined.userns_fd, cgroups=confined.cgroups,
            command=("/bin/sh", "-c", script),
        )  # fmt: skip
        try:
            process = await spawning.spawn(backend.settings, launch, isolation.zygote)
        finally:
            os.close(confined.userns_fd)
        tail = _LogTail(root, emit)
        try:
            async with asyncio.timeout(timeout_s):
                while not process.exited.done():
                    await asyncio.wait([process.exited], timeout=_POLL_S)
                    await asyncio.to_thread(tail.poll)
        except TimeoutError as error:
            raise StepTimedOut(f"the step did not finish within {timeout_s:g} s") from error
        finally:
            await backend.stop_processes(env_id, process)
            await asyncio.to_thread(tail.close)
        code = await asyncio.to_thread(_exit_status, root)
        if code == 0:
            await asyncio.to_thread(_unstage, root)
            await asyncio.to_thread(
                backend.layers.freeze, confined.paths.layer / "upper",
                confined.paths.uid_base, layer_id, tenant,
            )  # fmt: skip
        return code
    finally:
        await backend.free(env_id, confined.link.address)
