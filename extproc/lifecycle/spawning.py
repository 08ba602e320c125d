"""Starting one sandbox: its servers in namespaces of their own, behind a tiny supervisor.

Why a supervisor. The sandbox must survive a killed lifecycle process (a restart re-adopts
it from SQLite) yet never leak. So the sandbox hangs under `sh -c '... "$@" & wait'` (dash,
~1 MiB), not under the lifecycle process: killing that shell kills the sandbox, the
lifecycle process dying does not. The shell leads its own process group (killpg reaches
it) and carries a marker as `$0` (`agentcube-sandbox:<state dir>:<id>`), so a restart finds
supervisors it has no row for (a crash between spawn and commit) and kills them.

The namespace chain (isolation "namespaces"):

    sh (supervisor: joins the cgroups, sets rlimits, host root)
    └ nsenter --net=<sandbox netns> --user=<sandbox userns>   (becomes root inside)
      └ unshare --mount --uts --ipc --pid --fork --kill-child
        └ sh (pid 1: `init` below mounts /proc, /dev, /run and the runtime, pivots into
          the sandbox's overlay root, then becomes the rootfs's sh, which reaps orphans)
          └ picod (and, for interpreter templates, the interpreter)

`--kill-child` gives pid 1 a parent-death signal, and the pid namespace dies with its pid
1, so killing the supervisor's group leaves nothing. The init reaches host paths only
through fds the supervisor opened (`/proc/self/fd/N`): as root inside it is an unprivileged
host uid and could not walk the 0700 state directory itself. It is not bwrap because bwrap
always sets no_new_privs, and `sudo` then refuses to run.

Secrets never travel in argv: the access token and the sandbox's env vars are environment
variables of the servers (AGENTCUBE_E2B_PICOD_*, which picod keeps out of the processes it
starts), readable on the host only by root and the sandbox's own root uid.

Interpreter templates run two servers in the one sandbox: picod (envd, 49983) and the code
interpreter (49999, whose warm Jupyter kernel is its child), each as `(server; kill $$) &`
under one shell: when either exits the shell is killed and the sandbox with it, so the
supervisor's liveness covers both servers.

Isolation "none" runs the servers as plain processes of this host user on a loopback
address of their own: for debugging only, documented as unsafe.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from extproc.core.errors import Unavailable
from extproc.lifecycle.mounting import SandboxRoot
from extproc.lifecycle.probing import INTERPRETER_PORT, PICOD_PORT, Probe
from extproc.lifecycle.processes import Watched, start_ticks
from extproc.lifecycle.settings import LocalSettings, default_interpreter_command

SANDBOX_HOME = "/home/user"
# The servers' log inside the sandbox (the host-side log holds only the init's own errors).
SERVER_LOG_INSIDE = "/var/log/agentcube-e2b.log"
RUNTIME = "/opt/agentcube"
JWT_KEY_INSIDE = f"{RUNTIME}/jwt-public.pem"
PYTHON_INSIDE = "/usr/bin/python3"
_SUPERVISOR = (
    '{join}ulimit -v {kib} 2>/dev/null; ulimit -u {nproc} 2>/dev/null; '
    '"$@" </dev/null & wait $!'
)
_INIT = """set -e
R={root}
mount -t proc -o nosuid,nodev,noexec proc "$R/proc"
mount -t tmpfs -o nosuid,mode=0755,size=1m dev "$R/dev"
for d in null zero full random urandom tty; do
  : > "$R/dev/$d"; mount --bind "/dev/$d" "$R/dev/$d"
done
mkdir "$R/dev/pts" "$R/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$R/dev/pts"
mount -t tmpfs -o nosuid,nodev,mode=1777 shm "$R/dev/shm"
ln -s pts/ptmx "$R/dev/ptmx"; ln -s /proc/self/fd "$R/dev/fd"
ln -s /proc/self/fd/0 "$R/dev/stdin"; ln -s /proc/self/fd/1 "$R/dev/stdout"
ln -s /proc/self/fd/2 "$R/dev/stderr"
mount -t tmpfs -o nosuid,nodev,mode=0755 run "$R/run"
mkdir -p "$R/run/lock" "$R/run/user" && chmod 1777 "$R/run/lock"
mount --bind -o ro {package} "$R{runtime}/lib/extproc"
mount --bind -o ro {site} "$R{runtime}/site-packages"
hostname {hostname}
# From here on the servers log inside the sandbox, into its own size-bounded layer: a log
# file on the host, writable through /proc/1/fd/1 by root inside, could fill the host's disk.
mkdir -p "$R/var/log" && exec >>"$R{server_log}" 2>&1
mkdir "$R/run/.host"
cd "$R"
pivot_root . run/.host
/run/.host/bin/umount -l /run/.host
rmdir /run/.host
cd /
exec nsenter --user=/proc/self/fd/{userns_fd} -- /bin/sh -c {servers} sandbox-{hostname}
"""


@dataclass(frozen=True)
class Launch:
    sandbox_id: str
    access_token: str
    # The address Envoy and the probes reach the sandbox's servers at.
    host: str
    # The sandbox's files on the host (its log; with namespaces, its root filesystem).
    paths: SandboxRoot
    memory_mb: int
    env: dict[str, str]
    # Also run the code interpreter on INTERPRETER_PORT (see the module docstring).
    interpreter: bool = False
    # With namespaces: the network namespace and the user namespace fd to enter, and the
    # cgroup.procs files to join.
    netns: Path | None = None
    userns_fd: int | None = None
    cgroups: list[Path] = field(default_factory=list)


def marker(settings: LocalSettings, sandbox_id: str) -> str:
    return f"agentcube-sandbox:{settings.state_dir.resolve()}:{sandbox_id}"


def _picod_argv(settings: LocalSettings, launch: Launch, isolated: bool) -> list[str]:
    home = SANDBOX_HOME if isolated else str(launch.paths.dir / "home")
    argv = [
        *_python_command(settings.picod_command, isolated),
        "--listen", f"{'0.0.0.0' if isolated else launch.host}:{PICOD_PORT}",
        "--sandbox-id", launch.sandbox_id,
        "--home", home,
        # The lifecycle keeps this sandbox's metric series itself (measuring.py).
        "--metrics-interval", "0",
    ]  # fmt: skip
    if settings.jwt_public_key is not None:
        argv += ["--jwt-public-key", JWT_KEY_INSIDE if isolated else str(settings.jwt_public_key)]
    return argv


def _interpreter_argv(settings: LocalSettings, launch: Launch, isolated: bool) -> list[str]:
    host = "127.0.0.1" if isolated else launch.host
    argv = [
        *_python_command(settings.interpreter_command, isolated),
        "--listen", f"{'0.0.0.0' if isolated else launch.host}:{INTERPRETER_PORT}",
        "--envd-url", f"http://{host}:{PICOD_PORT}",
        "--sandbox-id", launch.sandbox_id,
        "--cwd", SANDBOX_HOME if isolated else str(launch.paths.dir / "home"),
    ]  # fmt: skip
    if settings.jwt_public_key is not None:
        argv += ["--jwt-public-key", JWT_KEY_INSIDE if isolated else str(settings.jwt_public_key)]
    return argv


def _python_command(command: tuple[str, ...], isolated: bool) -> tuple[str, ...]:
    """Inside a sandbox the gateway's own Python is not visible: the image's python3 runs
    the same package (bound read-only under /opt/agentcube) instead."""
    if isolated and command and command[0] == sys.executable:
        return (PYTHON_INSIDE, *command[1:])
    return command


def _servers(settings: LocalSettings, launch: Launch, isolated: bool) -> list[str]:
    """The command run in the sandbox: picod, or the shell running both servers."""
    picod = _picod_argv(settings, launch, isolated)
    if not launch.interpreter:
        return picod
    interpreter = _interpreter_argv(settings, launch, isolated)
    script = (
        f"({shlex.join(picod)} </dev/null; kill $$) & "
        f"({shlex.join(interpreter)} </dev/null; kill $$) & wait"
    )
    return ["/bin/sh", "-c", script, f"sandbox-{launch.sandbox_id}"]


def secrets_env(launch: Launch) -> dict[str, str]:
    """The servers' credentials and the sandbox's env vars, as environment variables."""
    return {
        "AGENTCUBE_E2B_PICOD_ACCESS_TOKEN": launch.access_token,
        "AGENTCUBE_E2B_INTERPRETER_ACCESS_TOKEN": launch.access_token,
        "AGENTCUBE_E2B_PICOD_ENV_JSON": json.dumps(launch.env),
    }


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


def runtime_dirs() -> tuple[Path, Path]:
    """(the extproc package, the site-packages holding its dependencies) of this Python."""
    package = Path(__file__).resolve().parents[1]
    import uvicorn  # any dependency: its parent is the site-packages directory

    return package, Path(uvicorn.__file__).resolve().parents[1]


def _namespaced(settings: LocalSettings, launch: Launch) -> list[str]:
    """argv of the supervisor's child chain (see the module docstring)."""
    if launch.netns is None or launch.userns_fd is None:
        raise RuntimeError("a namespaced launch needs its netns and user namespace")
    package, site = runtime_dirs()
    servers = shlex.join(_servers(settings, launch, isolated=True))
    init = _INIT.format(
        root=shlex.quote(str(launch.paths.root.resolve())),
        package=shlex.quote(str(package)),
        site=shlex.quote(str(site)),
        runtime=RUNTIME,
        hostname=launch.sandbox_id,
        userns_fd=launch.userns_fd,
        server_log=SERVER_LOG_INSIDE,
        servers=shlex.quote(servers),
    )
    return [
        "nsenter", f"--net={launch.netns}", "--",
        "unshare", "--mount", "--uts", "--ipc", "--pid", "--fork", "--kill-child",
        "--propagation", "private", "--",
        "/bin/sh", "-c", init, f"init-{launch.sandbox_id}",
    ]  # fmt: skip


def spawn(settings: LocalSettings, launch: Launch, isolated: bool) -> Watched:
    """Start the supervisor (returns at once; see `wait_ready`)."""
    launch.paths.dir.mkdir(parents=True, exist_ok=True)
    fds: list[int] = []
    if isolated:
        inner = _namespaced(settings, launch)
        fds = [launch.userns_fd] if launch.userns_fd is not None else []
    else:
        (launch.paths.dir / "home").mkdir(exist_ok=True)
        inner = _servers(settings, launch, isolated=False)
    join = "".join(f"echo $$ > {shlex.quote(str(p))} && " for p in launch.cgroups)
    script = _SUPERVISOR.format(
        join=join,
        kib=launch.memory_mb * settings.address_space_factor * 1024,
        nproc=settings.max_processes,
    )
    argv = ["/bin/sh", "-c", script, marker(settings, launch.sandbox_id), *inner]
    log = os.open(launch.paths.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # own session and process group: killpg reaches it
            close_fds=True,
            pass_fds=fds,
            cwd=launch.paths.dir,
            env={**_base_env(launch, isolated), **secrets_env(launch)},
        )
    finally:
        os.close(log)
    ticks = start_ticks(popen.pid)
    return Watched(popen.pid, ticks if ticks is not None else -1, popen)


def _base_env(launch: Launch, isolated: bool) -> dict[str, str]:
    # The sandbox gets a clean environment: none of the lifecycle service's own variables.
    if isolated:
        return {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
            "HOME": "/root",
            "PYTHONPATH": f"{RUNTIME}/lib:{RUNTIME}/site-packages",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    keep = ("PATH", "LANG", "LC_ALL", "TZ", "PYTHONPATH", "VIRTUAL_ENV")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    # Unisolated, HOME would be this user's: Jupyter and IPython write their state there.
    env["HOME"] = str(launch.paths.dir / "home")
    return env


async def wait_ready(probe: Probe, process: Watched, launch: Launch, deadline_s: float) -> None:
    """Return when picod answers GET /health 204 and, for interpreter sandboxes, the
    interpreter has its warm kernel; raise Unavailable if the sandbox dies or is late.

    Polls with a short backoff (1 ms doubling to 20 ms): a refused connect costs ~50 µs,
    and the start is dominated by Python's and the kernel's, not by this loop.
    """
    give_up = time.monotonic() + deadline_s
    delay = 0.001
    picod_up = False
    while True:
        if process.exited.done():
            raise Unavailable("the sandbox process exited during start; see its picod.log")
        picod_up = picod_up or await probe.is_healthy(launch.host, limit_s=0.5)
        if picod_up and (
            not launch.interpreter
            or await probe.has_kernel(launch.host, launch.access_token, limit_s=0.5)
        ):
            return
        if time.monotonic() > give_up:
            raise Unavailable(f"the sandbox did not become ready within {deadline_s:g} s")
        await asyncio.wait([process.exited], timeout=delay)
        delay = min(delay * 2, 0.02)
