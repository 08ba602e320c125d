"""A fork of the zygote becoming one sandbox: its init (pid 1), then its picod.

The zygote (zygote.py) forks once per sandbox, into a new pid namespace; the fork runs
`become_sandbox` with the fds the lifecycle service sent (core/sandbox_spec.py: the spec,
the host-side log, the sandbox's network and user namespaces, its root filesystem as a
detached mount, a pipe to say "ready", the `cgroup.procs` files to join) and becomes:

    init    pid 1 of the new pid namespace, and the process the lifecycle service watches
    │       (its exit ends every process of the sandbox). As host root: names itself with
    │       the sandbox's marker (`agentcube-e2b-init agentcube-sandbox:<state>:<id>`,
    │       how a restarted lifecycle service finds it), leads its own session, joins the
    │       cgroups, sets the rlimits (and a refill's low priority), takes new mount, UTS
    │       and IPC namespaces and the sandbox's network namespace, and mounts (below).
    │       Then root of the sandbox's user namespace; it reaps orphans, and exits when a
    │       server does.
    ├ picod a fork of init: the imports it needs are already in memory
    └ ...   exec'd beside it: the code interpreter, a custom picod command, a build step

Mounts, and why they are safe from a tenant's files. Init first detaches clones of what it
needs from the zygote's own root (device nodes, the read-only runtime under /opt/agentcube),
attaches the sandbox's root, pivots into it and drops the old root, so that nothing of the
host is in its mount namespace any more. Only then, still host root, does it mount /proc,
/dev, /run and the runtime: every path now resolves inside the sandbox's root, so a symlink
a tenant left in its layer (a filesystem pause resumes on the tenant's own files) can at
worst shadow part of that sandbox, never reach the host. It creates files only in the tmpfs
it has just mounted, and writes none; the servers' log is opened after the switch to the
sandbox's root, as that user.

What is not carried over from the zygote: every fd but stdio and this request's own
(renumbered, the rest closed before anything else runs); signal handlers; host-root
credentials (setns into the user namespace, then setresuid/setresgid 0 inside, as nsenter
did; no_new_privs is never set, so `sudo` works). Init and picod are not dumpable after that
switch and their memory belongs to the host's user namespace, so root inside a sandbox
cannot read or trace them (it can trace every process picod starts), and a signal from
inside cannot reach init (pid 1 ignores every signal it has no handler for).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import resource
import signal
import socket
import sys
import traceback
from pathlib import Path
from typing import NoReturn

from extproc.core import namespaces as ns
from extproc.core.sandbox_spec import SPEC_FDS, SandboxSpec, read_spec
from extproc.picod import command

# Where the zygote's root has an empty directory the sandbox's root is attached at.
ROOT_MOUNT_POINT = "/run/sandbox-root"
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
# The runtime (this package and its dependencies), read-only, at the same paths in the
# zygote and in every sandbox, so that a lazy import in picod finds what the zygote did.
RUNTIME_DIRS = ("/opt/agentcube/lib/extproc", "/opt/agentcube/site-packages")
# The servers' log inside the sandbox, in its own size-bounded layer (a log on the host,
# writable by root inside through /proc/1/fd/1, could fill the host's disk).
SERVER_LOG = Path("/var/log/agentcube-e2b.log")
# Pid 1's command line: this, then the sandbox's marker (`spawning.marker`).
INIT_TITLE = "agentcube-e2b-init"
PYTHON = "/usr/bin/python3"
_MAX_FD = 1 << 20


def become_sandbox(fds: list[int]) -> NoReturn:
    """Run in a fresh fork of the zygote, pid 1 of a new pid namespace; never returns."""
    try:
        _init(_keep_only(fds))
    except BaseException:  # reported to the host-side log, then the sandbox ends
        with contextlib.suppress(Exception):
            os.write(2, f"sandbox start failed:\n{traceback.format_exc()}".encode())
    os._exit(111)


def _keep_only(fds: list[int]) -> list[int]:
    """Renumber `fds` to 3, 4, ... (close-on-exec) and close every other fd above 2: the
    zygote's control socket and log must not outlive the fork."""
    floor = 3 + len(fds)
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor) for fd in fds]
    for index, fd in enumerate(moved):
        os.dup2(fd, 3 + index, inheritable=False)
    os.closerange(floor, _MAX_FD)
    return list(range(3, floor))


def _default_signals() -> None:
    signal.set_wakeup_fd(-1)
    for signum in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
        signal.signal(signum, signal.SIG_DFL)


def _init(fds: list[int]) -> NoReturn:
    """Limits and bookkeeping, namespaces and mounts as host root, then root of the
    sandbox's users; then the servers, and reaping until one of them exits."""
    _default_signals()
    named = dict(zip(SPEC_FDS, fds, strict=False))
    cgroups = fds[len(SPEC_FDS) :]
    os.dup2(named["log"], 1)
    os.dup2(named["log"], 2)
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    spec = read_spec(named["spec"])
    # The marker first: a restarted lifecycle service finds the sandbox by it.
    _name_process("init", [INIT_TITLE, spec.marker])
    os.setsid()  # its own session and process group: killpg reaches the sandbox
    for procs in cgroups:
        os.write(procs, b"0")  # "0": the writing process
    address_space = spec.address_space_kib * 1024
    resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    resource.setrlimit(resource.RLIMIT_NPROC, (spec.max_processes, spec.max_processes))
    if spec.nice:
        os.setpriority(os.PRIO_PROCESS, 0, spec.nice)
    ns.unshare(ns.CLONE_NEWNS | ns.CLONE_NEWUTS | ns.CLONE_NEWIPC)
    ns.make_private("/")
    ns.setns(named["netns"], ns.CLONE_NEWNET)
    socket.sethostname(spec.sandbox_id)
    devices = {name: ns.clone_mount(f"/dev/{name}") for name in DEVICES}
    runtime = {path: ns.clone_mount(path, recursive=True) for path in RUNTIME_DIRS}
    for tree in runtime.values():
        ns.set_mount_attributes(
            tree, ns.MOUNT_ATTR_RDONLY | ns.MOUNT_ATTR_NOSUID | ns.MOUNT_ATTR_NODEV
        )
    ns.attach(named["root"], ROOT_MOUNT_POINT)
    # A clone of a shared mount joins its peer group: made private first, or the mounts
    # below would appear under the host's view of the root too.
    ns.make_private(ROOT_MOUNT_POINT)
    os.chdir(ROOT_MOUNT_POINT)
    ns.pivot_root(".", ".")  # the old root now sits on top of the new one...
    ns.unmount(".")  # ...and goes: nothing of the zygote's or the host's mounts is left
    os.chdir("/")
    _mount_system(devices, runtime)
    host_side = [named[n] for n in ("spec", "log", "netns", "root")]
    for fd in (*host_side, *cgroups, *devices.values(), *runtime.values()):
        os.close(fd)
    ns.setns(named["userns"], ns.CLONE_NEWUSER)
    os.close(named["userns"])
    os.setgroups([])
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    _log_inside()
    _reap(_start_servers(spec, named["ready"]))


def _name_process(name: str, argv: list[str]) -> None:
    """What `ps` shows (a fork would show the zygote's command line)."""
    ns.set_thread_name(name)
    with contextlib.suppress(OSError):  # PR_SET_MM_MAP: the zygote checked it at start
        ns.set_command_line(argv)


def _mount_system(devices: dict[str, int], runtime: dict[str, int]) -> None:
    """/proc, /dev, /run and the runtime, inside the sandbox's root (see the docstring)."""
    dev, run = Path("/dev"), Path("/run")
    ns.mount("proc", "/proc", "proc", ns.MS_NOSUID | ns.MS_NODEV | ns.MS_NOEXEC)
    ns.mount("dev", str(dev), "tmpfs", ns.MS_NOSUID, "mode=0755,size=1m")
    for name, tree in devices.items():
        target = dev / name
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
        ns.attach(tree, str(target))
    (dev / "pts").mkdir()
    (dev / "shm").mkdir()
    ns.mount("devpts", str(dev / "pts"), "devpts", 0, "newinstance,ptmxmode=0666,mode=0620")
    ns.mount("shm", str(dev / "shm"), "tmpfs", ns.MS_NOSUID | ns.MS_NODEV, "mode=1777")
    links = {"ptmx": "pts/ptmx", "fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
             "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"}  # fmt: skip
    for name, target_name in links.items():
        (dev / name).symlink_to(target_name)
    ns.mount("run", str(run), "tmpfs", ns.MS_NOSUID | ns.MS_NODEV, "mode=0755")
    (run / "lock").mkdir()
    (run / "lock").chmod(0o1777)  # world-writable and sticky, as on any Debian
    (run / "user").mkdir()
    for path, tree in runtime.items():
        ns.attach(tree, path)


def _log_inside() -> None:
    """From here on the servers log into the sandbox's own layer (opened as its root)."""
    SERVER_LOG.parent.mkdir(parents=True, exist_ok=True)
    log = os.open(SERVER_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)


def _start_servers(spec: SandboxSpec, ready: int) -> set[int]:
    servers = set()
    if spec.picod_args is not None:
        pid = os.fork()
        if pid == 0:
            _run_picod(spec, ready)
        servers.add(pid)
    os.close(ready)  # picod's now, or nobody's (the lifecycle service then sees its end)
    for argv in spec.commands:
        servers.add(os.posix_spawnp(argv[0], list(argv), spec.env))
    return servers


def picod_parser() -> argparse.ArgumentParser:
    """`agentcube-e2b picod`'s own parser (what `cli.main` builds for it, without the other
    commands' parsers: a third of a forked picod's start went into building those)."""
    parser = argparse.ArgumentParser(prog="agentcube-e2b picod")
    command.register(parser)
    return parser


def _run_picod(spec: SandboxSpec, ready: int) -> NoReturn:
    """picod, as `python3 -m extproc.cli picod <args>` would run it, minus the imports."""
    code = 1
    try:
        argv = [*(spec.picod_args or ()), "--ready-fd", str(ready)]
        _name_process("picod", [PYTHON, "-m", "extproc.cli", "picod", *(spec.picod_args or ())])
        # What a fresh interpreter has: Python's own handlers, no inherited environment.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        os.environ.clear()
        os.environ.update(spec.env)
        sys.argv = ["agentcube-e2b", "picod", *argv]
        args = picod_parser().parse_args(argv)  # flags' defaults read the env just set
        code = args.run(args)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
    os._exit(code)


def _reap(servers: set[int]) -> NoReturn:
    """Pid 1's work: collect every child (orphans are re-parented here) until a server
    exits, then exit, which ends every process of the sandbox."""
    while True:
        try:
            pid, _ = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(0)
        if pid in servers:
            os._exit(0)
