"""Finding, signalling and watching a sandbox's processes through /proc and pidfds.

A sandbox is a process tree under one supervisor (see `spawning`). Its supervisor is the
leader of its own process group, so `killpg` reaches it and the sandbox's init; the
sandbox's own processes sit in a pid namespace that dies with that init, so nothing inside
survives either.
Exit is observed with a pidfd, which works both for our children and for supervisors
re-adopted after a restart (which are not our children and cannot be waited for).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from pathlib import Path

from extproc.core.kernel_files import read_kernel_file

_PROC = Path("/proc")
# A sandbox init's command line starts with this, then its marker (picod/sandbox_init.py).
INIT_TITLE = b"agentcube-e2b-init"
# The pid of a sandbox that has no processes (paused, filesystem only). Negative, so that
# nothing keyed by pid can reach a real process through it (pid 0 is the kernel's: /proc
# lists init and kthreadd as its children).
NO_PROCESS = -1


def start_ticks(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot, or None if it is gone."""
    try:
        raw = read_kernel_file(f"/proc/{pid}/stat")
    except OSError:
        return None
    # Field 2 (comm) may hold spaces and ')'; fields after the last ')' are fixed.
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[19])


def is_alive(pid: int, ticks: int) -> bool:
    """True if `pid` runs and is the same process that started at `ticks`."""
    return pid > 0 and start_ticks(pid) == ticks


def children(pid: int) -> list[int]:
    """The children of `pid`, from each of its threads' `children` file: only the
    sandbox's own processes are read, not every process of the host."""
    found: list[int] = []
    try:
        with os.scandir(f"/proc/{pid}/task") as threads:
            paths = [f"{thread.path}/children" for thread in threads]
    except OSError:
        return found
    for path in paths:
        with contextlib.suppress(OSError):
            found += [int(c) for c in read_kernel_file(path).split()]
    return found


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants, parents before children."""
    order, stack = [], [pid]
    while stack:
        current = stack.pop()
        order.append(current)
        stack.extend(children(current))
    return order


def _below(pid: int, depth: int) -> list[int]:
    """Descendants of `pid` at least `depth` generations down, parents first."""
    level = [pid]
    for _ in range(depth):
        level = [c for p in level for c in children(p)]
    return [p for top in level for p in tree(top)]


def signal_tree(pid: int, signum: signal.Signals, depth: int) -> int:
    """Send `signum` to the tree; returns how many processes were signalled.

    Only processes `depth` generations below the supervisor are signalled: the supervisor
    and the sandbox's init keep running (init keeps reaping, and its exit would end the
    sandbox). SIGSTOP repeats until a pass finds no new process (a fork racing the stop
    would otherwise escape it).
    """
    done: set[int] = set()
    for _ in range(5):
        fresh = [p for p in _below(pid, depth) if p not in done]
        if not fresh:
            break
        for p in fresh:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signum)
            done.add(p)
    return len(done)


def kill_group(pid: int, ticks: int) -> list[int]:
    """SIGKILL the supervisor's tree and process group (if it is still that process).

    The pid namespace would take the sandbox down with its init anyway; killing every
    process we can see as well means none outlives this call by more than the kernel's
    teardown.
    Returns the pids signalled, for `wait_gone`.
    """
    if not is_alive(pid, ticks):
        return []
    pids = tree(pid)
    for p in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    return pids


def _running(pid: int) -> bool:
    try:
        raw = read_kernel_file(f"/proc/{pid}/stat")
    except OSError:
        return False
    return raw[raw.rindex(")") + 2] != "Z"  # a zombie has released everything but its pid


async def wait_gone(pids: list[int], limit_s: float) -> bool:
    """Wait until none of `pids` runs; False if some still do after `limit_s` seconds."""
    deadline = asyncio.get_running_loop().time() + limit_s
    delay = 0.001
    while any(_running(p) for p in pids):
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)
    return True


class Watched:
    """A supervisor whose exit we want to hear about (with pid NO_PROCESS: none, which has
    exited already and which `kill` leaves alone)."""

    def __init__(
        self, pid: int, ticks: int, popen: subprocess.Popen[bytes] | None,
        pidfd: int | None = None, ready_fd: int | None = None,
    ) -> None:  # fmt: skip
        """`pidfd`, if given, is `pid`'s; `ready_fd` the read end of a pipe its picod
        writes to once it serves (`probing.Probe.wait_ready`). Both are taken over: closed by
        `close`."""
        self.pid = pid
        self.ticks = ticks
        self._popen = popen
        self.ready_fd = ready_fd
        loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[None] = loop.create_future()
        self._fd: int | None = pidfd
        if pid > 0 and pidfd is None:
            with contextlib.suppress(ProcessLookupError):
                self._fd = os.pidfd_open(pid)
        if self._fd is None:
            self._reap()
            self.exited.set_result(None)
            return
        loop.add_reader(self._fd, self._on_exit)

    @classmethod
    def absent(cls) -> Watched:
        """No process at all: what a sandbox paused to its filesystem has."""
        return cls(NO_PROCESS, NO_PROCESS, None)

    def _reap(self) -> None:
        if self._popen is not None:
            # Our own child: collect it so it does not linger as a zombie.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(timeout=0)

    def _on_exit(self) -> None:
        self.close()
        self._reap()
        if not self.exited.done():
            self.exited.set_result(None)

    def close(self) -> None:
        self.close_ready()
        if self._fd is not None:
            asyncio.get_running_loop().remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None

    def close_ready(self) -> None:
        if self.ready_fd is not None:
            os.close(self.ready_fd)
            self.ready_fd = None

    def kill(self) -> list[int]:
        return kill_group(self.pid, self.ticks)


def scan_supervisors(marker: str) -> list[int]:
    """Pids of supervisors whose marker starts with `marker`: a sandbox's init
    (`agentcube-e2b-init <marker>`), or the `sh -c <script> <marker>` of a sandbox without
    isolation (and of sandboxes started before the zygote)."""
    wanted = marker.encode()
    found = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        init = len(argv) > 1 and argv[0] == INIT_TITLE and argv[1].startswith(wanted)
        shell = len(argv) > 3 and argv[1] == b"-c" and argv[3].startswith(wanted)
        if init or shell:
            found.append(int(entry.name))
    return found
