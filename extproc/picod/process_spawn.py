"""Starting one OS process the way envd does: own session, pipes or a real PTY, a user.

Every process gets its own session (so its own process group): signals and the deadline
go to the whole group, and a PTY needs the session anyway to become the controlling
terminal. The environment is built from nothing (never inherited from picod, whose own
env may hold its access token), then the sandbox's env vars, then the request's.
"""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import termios
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from extproc.core.errors import InvalidArgument
from extproc.picod.users import User

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class PtySize:
    cols: int
    rows: int


@dataclass
class Spawned:
    popen: subprocess.Popen[bytes]
    # Output fds (non-blocking, ours to close): (stdout, stderr), or (pty master,).
    outputs: dict[str, int]
    # Where input goes: the stdin pipe, the PTY master, or None (stdin is /dev/null).
    input_fd: int | None


def process_env(
    user: User, sandbox_env: dict[str, str], request_env: dict[str, str]
) -> dict[str, str]:
    env = {
        "PATH": DEFAULT_PATH,
        "HOME": str(user.home),
        "USER": user.name,
        "LOGNAME": user.name,
    }
    env.update(sandbox_env)
    env.update(request_env)
    return env


def set_window_size(fd: int, size: PtySize) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", size.rows, size.cols, 0, 0))


def _take_controlling_terminal() -> None:  # runs in the child, after setsid
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def spawn(
    argv: list[str],
    env: dict[str, str],
    cwd: Path,
    user: User,
    *,
    stdin: bool,
    pty_size: PtySize | None,
) -> Spawned:
    if not argv or not argv[0]:
        raise InvalidArgument("process.cmd must not be empty")
    if not cwd.is_dir():
        raise InvalidArgument(f"cwd {str(cwd)!r} does not exist or is not a directory")
    switch = _Switch(None, None, None)
    if user.uid != os.geteuid():
        switch = _Switch(user.uid, user.gid, os.getgrouplist(user.name, user.gid))
    if pty_size is not None:
        return _spawn_pty(argv, env, cwd, switch, pty_size)
    return _spawn_pipes(argv, env, cwd, switch, stdin)


@dataclass(frozen=True)
class _Switch:
    """The account to become in the child (all None: stay picod's own)."""

    uid: int | None
    gid: int | None
    groups: list[int] | None


def _start(
    argv: list[str],
    env: dict[str, str],
    cwd: Path,
    switch: _Switch,
    *,
    stdin: int,
    stdout: int,
    stderr: int,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.Popen[bytes]:
    """Popen in a session of its own, as `switch`'s account (raises OSError)."""
    return subprocess.Popen(
        argv,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        cwd=cwd,
        env=env,
        start_new_session=True,
        preexec_fn=preexec_fn,
        user=switch.uid,
        group=switch.gid,
        extra_groups=switch.groups,
    )


def _spawn_pipes(
    argv: list[str], env: dict[str, str], cwd: Path, switch: _Switch, stdin: bool
) -> Spawned:
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    in_r, in_w = os.pipe() if stdin else (subprocess.DEVNULL, -1)
    try:
        popen = _start(argv, env, cwd, switch, stdin=in_r, stdout=out_w, stderr=err_w)
    except OSError as e:
        for fd in (out_r, err_r, in_w):
            if fd >= 0:
                os.close(fd)
        raise InvalidArgument(f"cannot start {argv[0]!r}: {e.strerror}") from e
    finally:
        for fd in (out_w, err_w, in_r):
            if fd >= 0:
                os.close(fd)
    for fd in (out_r, err_r):
        os.set_blocking(fd, False)
    if in_w >= 0:
        os.set_blocking(in_w, False)
    return Spawned(popen, {"stdout": out_r, "stderr": err_r}, in_w if in_w >= 0 else None)


def _spawn_pty(
    argv: list[str], env: dict[str, str], cwd: Path, switch: _Switch, size: PtySize
) -> Spawned:
    master, slave = pty.openpty()
    try:
        set_window_size(slave, size)
        popen = _start(
            argv,
            env,
            cwd,
            switch,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            preexec_fn=_take_controlling_terminal,  # single-threaded loop: no fork hazards
        )
    except OSError as e:
        os.close(master)
        raise InvalidArgument(f"cannot start {argv[0]!r}: {e.strerror}") from e
    finally:
        os.close(slave)
    os.set_blocking(master, False)
    return Spawned(popen, {"pty": master}, master)
