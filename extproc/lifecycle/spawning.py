"""Starting one sandbox: a picod under bubblewrap, behind a tiny per-sandbox supervisor.

Why a supervisor. The sandbox must survive a killed lifecycle process (a restart re-adopts
it from SQLite) yet never leak. So bwrap runs with `--die-with-parent` whose parent is not
the lifecycle process but `sh -c '... "$@" & wait'` (dash, ~1 MiB): killing that shell kills
bwrap, whose pid-namespace init takes every process of the sandbox with it; the lifecycle
process dying does not touch the shell. The shell leads its own process group (killpg reaches
it and bwrap) and carries a marker as `$0` (`agentcube-sandbox:<state dir>:<id>`), so a
restart finds supervisors it has no row for (a crash between spawn and commit) and kills them.

Isolation: own pid/ipc/uts namespaces, all capabilities dropped, `/` read-only, a fresh
tmpfs over `/home`, `/run`, `/tmp` and over the state dir (other sandboxes' homes and
the token seed), the sandbox's home bound at `/home/user`, network shared: each sandbox
listens on its own 127.100.x.y. Limits: `ulimit -v` (RLIMIT_AS, per process) in the
supervisor; cgroups are not used (see `limits` in the lifecycle settings docs).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from extproc.core.errors import Unavailable
from extproc.lifecycle.processes import Watched, start_ticks
from extproc.lifecycle.settings import LocalSettings

PICOD_PORT = 49983
SANDBOX_HOME = "/home/user"
JWT_KEY_INSIDE = "/run/agentcube/jwt-public.pem"
_SUPERVISOR = 'ulimit -v {kib} 2>/dev/null; "$@" </dev/null & wait $!'


@dataclass(frozen=True)
class Launch:
    sandbox_id: str
    access_token: str
    host: str
    # Host directory bound at /home/user; its parent holds picod's log.
    home: Path
    memory_mb: int
    env: dict[str, str]


def marker(settings: LocalSettings, sandbox_id: str) -> str:
    return f"agentcube-sandbox:{settings.state_dir.resolve()}:{sandbox_id}"


def _picod_argv(settings: LocalSettings, launch: Launch, isolated: bool) -> list[str]:
    home = SANDBOX_HOME if isolated else str(launch.home)
    argv = [
        *settings.picod_command,
        "--listen", f"{launch.host}:{PICOD_PORT}",
        "--sandbox-id", launch.sandbox_id,
        "--access-token", launch.access_token,
        "--home", home,
    ]  # fmt: skip
    if settings.jwt_public_key is not None:
        key = JWT_KEY_INSIDE if isolated else str(settings.jwt_public_key)
        argv += ["--jwt-public-key", key]
    for key, value in sorted(launch.env.items()):
        argv += ["--env", f"{key}={value}"]
    return argv


def _bwrap_argv(settings: LocalSettings, launch: Launch, bwrap: str) -> list[str]:
    argv = [
        bwrap,
        "--unshare-pid", "--unshare-ipc", "--unshare-uts",
        "--die-with-parent", "--new-session", "--cap-drop", "ALL",
        "--hostname", launch.sandbox_id,
        "--ro-bind", "/", "/",
        "--tmpfs", str(settings.state_dir.resolve()),
        "--tmpfs", "/home", "--tmpfs", "/run", "--tmpfs", "/tmp",  # noqa: S108
        "--bind", str(launch.home), SANDBOX_HOME,
        "--proc", "/proc", "--dev", "/dev",
        "--setenv", "HOME", SANDBOX_HOME,
        "--chdir", SANDBOX_HOME,
    ]  # fmt: skip
    if settings.jwt_public_key is not None:
        argv += ["--ro-bind", str(settings.jwt_public_key.resolve()), JWT_KEY_INSIDE]
    return [*argv, "--", *_picod_argv(settings, launch, isolated=True)]


def find_bwrap(settings: LocalSettings) -> str | None:
    if not settings.isolation:
        return None
    return shutil.which("bwrap")


def spawn(settings: LocalSettings, launch: Launch, bwrap: str | None) -> Watched:
    """Start the supervisor (returns at once; see `wait_ready`)."""
    launch.home.mkdir(parents=True, exist_ok=True)
    inner = (
        _bwrap_argv(settings, launch, bwrap)
        if bwrap
        else _picod_argv(settings, launch, isolated=False)
    )
    script = _SUPERVISOR.format(kib=launch.memory_mb * settings.address_space_factor * 1024)
    argv = ["/bin/sh", "-c", script, marker(settings, launch.sandbox_id), *inner]
    log = launch.home.parent / "picod.log"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=fd,
            start_new_session=True,  # own session and process group: killpg reaches it
            close_fds=True,
            cwd=launch.home,
            env=_base_env(),
        )
    finally:
        os.close(fd)
    ticks = start_ticks(popen.pid)
    return Watched(popen.pid, ticks if ticks is not None else -1, popen)


def _base_env() -> dict[str, str]:
    # The sandbox gets a clean environment: none of the lifecycle service's own variables.
    keep = ("PATH", "LANG", "LC_ALL", "TZ", "PYTHONPATH", "VIRTUAL_ENV")
    return {k: os.environ[k] for k in keep if k in os.environ}


async def http_status(
    host: str, method: str, path: str, headers: dict[str, str], body: bytes, limit_s: float
) -> int:
    """One HTTP/1.1 request to picod; the status code. Raises OSError or TimeoutError."""
    async with asyncio.timeout(limit_s):
        reader, writer = await asyncio.open_connection(host, PICOD_PORT)
        try:
            lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{PICOD_PORT}", "Connection: close"]
            lines += [f"{k}: {v}" for k, v in headers.items()]
            lines.append(f"Content-Length: {len(body)}")
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
            status_line = await reader.readline()
        finally:
            writer.close()
    parts = status_line.split()
    if len(parts) < 2 or not parts[1].isdigit():
        raise OSError(f"bad HTTP status line from picod: {status_line[:80]!r}")
    return int(parts[1])


async def in_use(host: str) -> bool:
    """True if something already listens on host:49983 (another service's sandbox, or a
    stray): starting a picod there would fail to bind while /health answered for it."""
    try:
        async with asyncio.timeout(0.5):
            _, writer = await asyncio.open_connection(host, PICOD_PORT)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


async def is_healthy(host: str, limit_s: float = 1.0) -> bool:
    try:
        return await http_status(host, "GET", "/health", {}, b"", limit_s) == 204
    except (OSError, TimeoutError):
        return False


async def wait_ready(process: Watched, host: str, deadline_s: float) -> None:
    """Return when picod answers GET /health 204; raise Unavailable if it dies or is late.

    Polls with a short backoff (1 ms doubling to 20 ms): a refused connect costs ~50 µs on
    loopback, and picod's start is dominated by the interpreter, not by this loop.
    """
    give_up = time.monotonic() + deadline_s
    delay = 0.001
    while True:
        if process.exited.done():
            raise Unavailable("the sandbox process exited during start; see its picod.log")
        if await is_healthy(host, limit_s=0.5):
            return
        if time.monotonic() > give_up:
            raise Unavailable(f"the sandbox did not become ready within {deadline_s:g} s")
        await asyncio.wait([process.exited], timeout=delay)
        delay = min(delay * 2, 0.02)
