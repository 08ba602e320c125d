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

Interpreter templates run two servers in the one sandbox: picod (envd, 49983) and the code
interpreter (49999, whose warm Jupyter kernel is its child). bwrap starts one command, so
that command is a small inner shell that starts both, each as `(server; kill $$) &`: when
either server exits the inner shell is killed, bwrap's pid-namespace init follows, and the
supervisor exits. So the supervisor's liveness covers both servers, and Pause, Kill, metrics
and re-adoption, which all work on the supervisor's tree, need no change.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from extproc.core.errors import Unavailable
from extproc.lifecycle.processes import Watched, start_ticks
from extproc.lifecycle.settings import LocalSettings, default_interpreter_command

PICOD_PORT = 49983
INTERPRETER_PORT = 49999
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
    # Also run the code interpreter on INTERPRETER_PORT (see the module docstring).
    interpreter: bool = False


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


def _interpreter_argv(settings: LocalSettings, launch: Launch, isolated: bool) -> list[str]:
    argv = [
        *settings.interpreter_command,
        "--listen", f"{launch.host}:{INTERPRETER_PORT}",
        "--envd-url", f"http://{launch.host}:{PICOD_PORT}",
        "--sandbox-id", launch.sandbox_id,
        "--access-token", launch.access_token,
        "--cwd", SANDBOX_HOME if isolated else str(launch.home),
    ]  # fmt: skip
    if settings.jwt_public_key is not None:
        key = JWT_KEY_INSIDE if isolated else str(settings.jwt_public_key)
        argv += ["--jwt-public-key", key]
    return argv


def _sandbox_argv(settings: LocalSettings, launch: Launch, isolated: bool) -> list[str]:
    """The command run in the sandbox: picod, or the inner shell running both servers."""
    picod = _picod_argv(settings, launch, isolated)
    if not launch.interpreter:
        return picod
    interpreter = _interpreter_argv(settings, launch, isolated)
    script = (
        f"({shlex.join(picod)} </dev/null; kill $$) & "
        f"({shlex.join(interpreter)} </dev/null; kill $$) & wait"
    )
    return ["/bin/sh", "-c", script, f"sandbox-{launch.sandbox_id}"]


def interpreter_missing(settings: LocalSettings) -> str:
    """Why interpreter templates cannot run here ('' if they can), checked at start-up.

    A custom `interpreter_command` is trusted; the default one runs this Python's
    `extproc.interpreter`, so that package and its dependencies must be importable.
    """
    if settings.interpreter_command != default_interpreter_command():
        return ""
    wanted = ("extproc.interpreter", "jupyter_client", "ipykernel", "zmq", "uvicorn")
    missing = [name for name in wanted if importlib.util.find_spec(name) is None]
    if not missing:
        return ""
    return (
        "template code-interpreter-v1 is not available on this gateway: the code interpreter "
        f"is not installed (missing Python modules: {', '.join(missing)}); use template 'base'"
    )


_HIDDEN_ROOTS = (Path("/home"), Path("/run"), Path("/tmp"))  # noqa: S108


def _runtime_binds() -> list[str]:
    """Read-only binds for the Python that runs picod, where a tmpfs above would hide it.

    A checkout and its .venv may live under /tmp or /home (CI clones anywhere); the sandbox
    needs the interpreter, the venv and, for an editable install, the package's source.
    """
    package_root = Path(__file__).resolve().parents[2]
    wanted = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(), package_root}
    binds: list[str] = []
    for path in sorted(wanted):
        if any(path.is_relative_to(root) for root in _HIDDEN_ROOTS):
            binds += ["--ro-bind", str(path), str(path)]
    return binds


def _bwrap_argv(settings: LocalSettings, launch: Launch, bwrap: str) -> list[str]:
    argv = [
        bwrap,
        "--unshare-pid", "--unshare-ipc", "--unshare-uts",
        "--die-with-parent", "--new-session", "--cap-drop", "ALL",
        "--hostname", launch.sandbox_id,
        "--ro-bind", "/", "/",
        "--tmpfs", "/home", "--tmpfs", "/run", "--tmpfs", "/tmp",  # noqa: S108
        *_runtime_binds(),
        # After the runtime binds: a state dir inside the checkout stays hidden.
        "--tmpfs", str(settings.state_dir.resolve()),
        "--bind", str(launch.home), SANDBOX_HOME,
        "--proc", "/proc", "--dev", "/dev",
        "--setenv", "HOME", SANDBOX_HOME,
        "--chdir", SANDBOX_HOME,
    ]  # fmt: skip
    if settings.jwt_public_key is not None:
        argv += ["--ro-bind", str(settings.jwt_public_key.resolve()), JWT_KEY_INSIDE]
    return [*argv, "--", *_sandbox_argv(settings, launch, isolated=True)]


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
        else _sandbox_argv(settings, launch, isolated=False)
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
            env=_base_env(None if bwrap else launch.home),
        )
    finally:
        os.close(fd)
    ticks = start_ticks(popen.pid)
    return Watched(popen.pid, ticks if ticks is not None else -1, popen)


def _base_env(home: Path | None) -> dict[str, str]:
    # The sandbox gets a clean environment: none of the lifecycle service's own variables.
    keep = ("PATH", "LANG", "LC_ALL", "TZ", "PYTHONPATH", "VIRTUAL_ENV")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    if home is not None:
        # Unisolated, HOME would be this user's: Jupyter and IPython write their state there.
        env["HOME"] = str(home)
    return env


async def http_request(
    host: str,
    port: int,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes,
    limit_s: float,
) -> tuple[int, bytes]:
    """One HTTP/1.1 request with `Connection: close`: (status, raw body). Raises OSError or
    TimeoutError. For the few small requests to a sandbox's own servers only."""
    async with asyncio.timeout(limit_s):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
            lines += [f"{k}: {v}" for k, v in headers.items()]
            lines.append(f"Content-Length: {len(body)}")
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
            raw = await reader.read(65536)
            while len(raw) < 65536 and (more := await reader.read(65536)):
                raw += more
        finally:
            writer.close()
    status_line, _, rest = raw.partition(b"\r\n")
    parts = status_line.split()
    if len(parts) < 2 or not parts[1].isdigit():
        raise OSError(f"bad HTTP status line from the sandbox: {status_line[:80]!r}")
    return int(parts[1]), rest.partition(b"\r\n\r\n")[2]


async def http_status(
    host: str, method: str, path: str, headers: dict[str, str], body: bytes, limit_s: float
) -> int:
    """One HTTP/1.1 request to picod; the status code. Raises OSError or TimeoutError."""
    status, _ = await http_request(host, PICOD_PORT, method, path, headers, body, limit_s)
    return status


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


async def has_kernel(host: str, access_token: str, limit_s: float = 1.0) -> bool:
    """True once the interpreter lists a context: its warm default kernel has started and
    answered (its /health is 200 from the moment it listens, before the kernel is up)."""
    headers = {"X-Access-Token": access_token}
    try:
        status, body = await http_request(
            host, INTERPRETER_PORT, "GET", "/contexts", headers, b"", limit_s
        )
    except (OSError, TimeoutError):
        return False
    return status == 200 and body.lstrip()[:1] == b"[" and body.strip() != b"[]"


async def wait_ready(process: Watched, launch: Launch, deadline_s: float) -> None:
    """Return when picod answers GET /health 204 and, for interpreter sandboxes, the
    interpreter has its warm kernel; raise Unavailable if the sandbox dies or is late.

    Polls with a short backoff (1 ms doubling to 20 ms): a refused connect costs ~50 µs on
    loopback, and the start is dominated by Python's and the kernel's, not by this loop.
    """
    give_up = time.monotonic() + deadline_s
    delay = 0.001
    picod_up = False
    while True:
        if process.exited.done():
            raise Unavailable("the sandbox process exited during start; see its picod.log")
        picod_up = picod_up or await is_healthy(launch.host, limit_s=0.5)
        if picod_up and (
            not launch.interpreter
            or await has_kernel(launch.host, launch.access_token, limit_s=0.5)
        ):
            return
        if time.monotonic() > give_up:
            raise Unavailable(f"the sandbox did not become ready within {deadline_s:g} s")
        await asyncio.wait([process.exited], timeout=delay)
        delay = min(delay * 2, 0.02)
