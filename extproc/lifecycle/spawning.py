"""Starting one sandbox: its servers in namespaces of their own, behind a supervisor.

Why a supervisor. The sandbox must survive a killed lifecycle process (a restart re-adopts
it from SQLite) yet never leak. So the sandbox hangs under a supervisor process that is not
the lifecycle process's child: killing the supervisor kills the sandbox, the lifecycle
process dying does not. The supervisor leads its own process group (killpg reaches it) and
carries a marker in its command line (`agentcube-sandbox:<state dir>:<id>`), so a restart
finds supervisors it has no row for (a crash between spawn and commit) and kills them.

Isolation "namespaces": the sandbox is a fork of the zygote, a picod started once with its
imports done (extproc/picod/zygote.py; `zygote` here starts it). The lifecycle service
sends it the sandbox's fds and a spec (core/sandbox_spec.py) and the fork becomes
(extproc/picod/sandbox_init.py):

    init (the supervisor: pid 1 of a new pid namespace, command line `agentcube-e2b-init
    │     <marker>`; as host root it joins the cgroups, sets the rlimits, takes new mount,
    │     UTS and IPC namespaces and the sandbox's network namespace, pivots into the
    │     sandbox's overlay root and mounts /proc, /dev, /run and the runtime; then it is
    │     root of the sandbox's user namespace, and reaps orphans)
    ├ picod (a fork of init, already imported: serves within milliseconds)
    └ the code interpreter, for interpreter templates (exec'd with the image's python3)

The pid namespace dies with its pid 1, so killing the supervisor leaves nothing. It is not
bwrap because bwrap always sets no_new_privs, and `sudo` then refuses to run. The sandbox's
own processes are `DEPTH` generations below the supervisor.

Secrets never travel in argv: the access token and the sandbox's env vars are environment
variables of the servers (AGENTCUBE_E2B_PICOD_*, which picod keeps out of the processes it
starts). With namespaces they reach the fork in a memfd the zygote passes on unread.

Interpreter templates run two servers in the one sandbox: picod (envd, 49983) and the code
interpreter (49999, whose warm Jupyter kernel is its child); when either exits the
sandbox ends, so the supervisor's liveness covers both servers.

Isolation "none" runs the servers as plain processes of this host user on a loopback
address of their own, under `sh -c '(server; kill $$) & ...' <marker>`: for debugging only,
documented as unsafe.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from extproc.core import namespaces
from extproc.core.sandbox_spec import SandboxSpec, write_spec
from extproc.lifecycle import data_stack
from extproc.lifecycle.mounting import SandboxRoot
from extproc.lifecycle.pooling import BACKGROUND, REFILL_NICE
from extproc.lifecycle.probing import INTERPRETER_PORT, PICOD_PORT
from extproc.lifecycle.processes import Watched, start_ticks, tree
from extproc.lifecycle.settings import LocalSettings, default_interpreter_command

if TYPE_CHECKING:
    from extproc.lifecycle.zygote import Zygote

SANDBOX_HOME = "/home/user"
# The servers' log inside the sandbox (the host-side log holds only the init's own errors).
SERVER_LOG_INSIDE = "/var/log/agentcube-e2b.log"
RUNTIME = "/opt/agentcube"
JWT_KEY_INSIDE = f"{RUNTIME}/jwt-public.pem"
PYTHON_INSIDE = "/usr/bin/python3"
# The sandbox's own processes (picod, the interpreter) are this many generations below
# its supervisor (`processes.signal_tree`): init -> picod.
DEPTH = 1
# Without isolation: sh -> picod (or the shell running both servers).
DEPTH_UNISOLATED = 1
# The default `picod_command`: such a picod is forked from the zygote, not exec'd.
_FORKED_PICOD = (sys.executable, "-m", "extproc.cli", "picod")
# The environment of the zygote and of every sandbox's servers: none of the lifecycle
# service's own variables.
SANDBOX_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/root",
    "PYTHONPATH": f"{RUNTIME}/lib:{RUNTIME}/site-packages",
    "PYTHONDONTWRITEBYTECODE": "1",
}
_UNISOLATED_SUPERVISOR = (
    'ulimit -v {kib} 2>/dev/null; ulimit -u {nproc} 2>/dev/null; "$@" </dev/null & wait $!'
)


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
    # Run this instead of the servers (a template build step, `building`); it ends the
    # sandbox when it exits.
    command: tuple[str, ...] = ()
    # The data stack the interpreter's kernels use (with namespaces, a layer of the root;
    # data_stack.py). None: none.
    data_stack: Path | None = None


def marker(settings: LocalSettings, sandbox_id: str) -> str:
    return f"agentcube-sandbox:{settings.state_dir.resolve()}:{sandbox_id}"


def _picod_flags(settings: LocalSettings, launch: Launch, isolated: bool) -> list[str]:
    home = SANDBOX_HOME if isolated else str(launch.paths.dir / "home")
    flags = [
        "--listen", f"{'0.0.0.0' if isolated else launch.host}:{PICOD_PORT}",
        "--sandbox-id", launch.sandbox_id,
        "--home", home,
        # The lifecycle keeps this sandbox's metric series itself (measuring.py).
        "--metrics-interval", "0",
    ]  # fmt: skip
    if settings.jwt_public_key is not None:
        key = JWT_KEY_INSIDE if isolated else str(settings.jwt_public_key)
        flags += ["--jwt-public-key", key]
    return flags


def _picod_argv(settings: LocalSettings, launch: Launch, isolated: bool) -> list[str]:
    command = _python_command(settings.picod_command, isolated)
    return [*command, *_picod_flags(settings, launch, isolated)]


def _interpreter_argv(settings: LocalSettings, launch: Launch, isolated: bool) -> list[str]:
    host = "127.0.0.1" if isolated else launch.host
    argv = [
        *_python_command(settings.interpreter_command, isolated),
        "--listen", f"{'0.0.0.0' if isolated else launch.host}:{INTERPRETER_PORT}",
        "--envd-url", f"http://{host}:{PICOD_PORT}",
        "--sandbox-id", launch.sandbox_id,
        "--cwd", SANDBOX_HOME if isolated else str(launch.paths.dir / "home"),
        *data_stack.interpreter_flags(launch.data_stack, isolated),
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
    if launch.command:
        return list(launch.command)
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


def sandbox_spec(settings: LocalSettings, launch: Launch, nice: int = 0) -> SandboxSpec:
    """What the zygote's fork runs for `launch` (see the module docstring)."""
    picod: tuple[str, ...] | None = None
    commands: list[tuple[str, ...]] = []
    if launch.command:
        commands.append(launch.command)
    elif settings.picod_command == _FORKED_PICOD:
        picod = tuple(_picod_flags(settings, launch, isolated=True))
    else:
        commands.append(tuple(_picod_argv(settings, launch, isolated=True)))
    if launch.interpreter and not launch.command:
        commands.append(tuple(_interpreter_argv(settings, launch, isolated=True)))
    return SandboxSpec(
        sandbox_id=launch.sandbox_id, marker=marker(settings, launch.sandbox_id),
        address_space_kib=launch.memory_mb * settings.address_space_factor * 1024,
        max_processes=settings.max_processes, picod_args=picod, commands=tuple(commands),
        env={**SANDBOX_ENV, **secrets_env(launch)}, nice=nice,
    )  # fmt: skip


async def spawn(settings: LocalSettings, launch: Launch, zygote: Zygote | None) -> Watched:
    """Start the sandbox's processes: a fork of `zygote`, or without isolation (None) plain
    processes. Returns once they are started, not ready (see `wait_ready`). A pool refill's
    sandbox starts at a low priority (pooling.py) until `restore_priority`."""
    launch.paths.dir.mkdir(parents=True, exist_ok=True)
    if zygote is None:
        return _spawn_unisolated(settings, launch)
    nice = REFILL_NICE if BACKGROUND.get() else 0
    if launch.netns is None or launch.userns_fd is None:
        raise RuntimeError("a namespaced launch needs its netns and user namespace")
    opened: list[int] = []  # every fd made here, in sandbox_spec.SPEC_FDS order at the end
    try:
        ready, ready_write = os.pipe()
        opened += [ready, ready_write]
        opened.append(write_spec(sandbox_spec(settings, launch, nice)))
        opened.append(os.open(launch.paths.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
        opened.append(os.open(launch.netns, os.O_RDONLY | os.O_CLOEXEC))
        opened.append(os.dup(launch.userns_fd))
        opened.append(namespaces.clone_mount(str(launch.paths.root.resolve()), recursive=True))
        opened += [os.open(p, os.O_WRONLY | os.O_CLOEXEC) for p in launch.cgroups]
    except BaseException:
        for fd in opened:
            os.close(fd)
        raise
    spec, log, netns, userns, root, *cgroups = opened[2:]
    try:
        pid, ticks, pidfd = await zygote.fork(
            [spec, log, netns, userns, root, ready_write, *cgroups]
        )
    except BaseException:
        os.close(ready)
        raise
    return Watched(pid, ticks, None, pidfd=pidfd, ready_fd=ready)


def restore_priority(process: Watched) -> None:
    """Normal CPU priority for every process of a sandbox a refill started (before it is
    handed out: nothing of a tenant's runs in it yet)."""
    for pid in tree(process.pid) if process.pid > 0 else []:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, pid, 0)


def _spawn_unisolated(settings: LocalSettings, launch: Launch) -> Watched:
    (launch.paths.dir / "home").mkdir(exist_ok=True)
    inner = _servers(settings, launch, isolated=False)
    script = _UNISOLATED_SUPERVISOR.format(
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
            cwd=launch.paths.dir,
            env={**_unisolated_env(launch), **secrets_env(launch)},
        )
    finally:
        os.close(log)
    ticks = start_ticks(popen.pid)
    return Watched(popen.pid, ticks if ticks is not None else -1, popen)


def _unisolated_env(launch: Launch) -> dict[str, str]:
    # The sandbox gets a clean environment: none of the lifecycle service's own variables.
    keep = ("PATH", "LANG", "LC_ALL", "TZ", "PYTHONPATH", "VIRTUAL_ENV")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    # Unisolated, HOME would be this user's: Jupyter and IPython write their state there.
    env["HOME"] = str(launch.paths.dir / "home")
    return env
