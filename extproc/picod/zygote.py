"""The zygote: one picod, imports done, that forks into every new sandbox.

Why. A picod started by exec spends ~0.4 s of CPU importing (protobuf-py, connectrpc,
uvicorn, asyncio) before it serves, and a sandbox start is mostly that. The lifecycle
service starts this process once; each sandbox is then a fork of it, which shares those
modules copy-on-write and serves within milliseconds (sandbox_init.py builds the
sandbox around the fork).

Where it runs. On the base image's own python3, like every picod (same minor version as
the gateway's, checked at start), in a mount namespace of its own that looks like a
sandbox's from Python's side: the base image read-only as its root, the runtime read-only
at /opt/agentcube, /dev with the few device nodes a sandbox gets, /proc, and an empty
/run/sandbox-root to attach a sandbox's root at. So the paths a lazy import resolves in a
forked picod are the ones it has inside the sandbox. It is host root (it makes the
namespaces), listens on nothing, and talks only to the lifecycle service over a
SOCK_SEQPACKET socket pair it inherited.

What it keeps out of its own memory. A fork copies the zygote's whole heap, including
freed memory, into a sandbox. So the zygote never reads a sandbox's spec (its access token
and env vars travel in a memfd it passes on unopened), never runs a tenant's code, and
holds nothing secret: each fork request is a bare `fork` message with fds, and the answer
is the sandbox init's pid, start time and pidfd. It is single-threaded and runs no event
loop, so forking is safe; its heap is frozen out of the garbage collector first, so forks
do not touch (and copy) it for nothing.

It exits when the lifecycle service closes its end (or dies): running sandboxes do not need
it, and the next lifecycle process starts a zygote of its own.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import importlib
import json
import os
import select
import signal
import socket
import sys
from pathlib import Path

from extproc.core import namespaces
from extproc.picod.sandbox_init import become_sandbox, picod_parser

# What every picod imports by the time it serves, and what it would import on first use
# (the filesystem service, /files): loaded once here instead of in every sandbox.
PRELOAD = (
    "extproc.picod.command",
    "extproc.picod.server",
    "extproc.picod.filesystem",
    "extproc.picod.files",
    "extproc._gen.filesystem.filesystem_connect",
    "uvloop",
    "uvicorn.protocols.http.httptools_impl",
    "uvicorn.lifespan.off",
    "encodings.idna",  # the listen address's resolution
)
# With a gateway public key, picod verifies JWTs from its first request on.
PRELOAD_JWT = (
    "jwt",
    "extproc.core.gateway_jwt",
    "cryptography.hazmat.primitives.serialization",
    "cryptography.hazmat.primitives.asymmetric.rsa",
)
MAX_FDS = 64
FORK = b"fork"


def preload(jwt: bool) -> None:
    for name in PRELOAD + (PRELOAD_JWT if jwt else ()):
        importlib.import_module(name)
    # argparse compiles its regular expressions on first use: once here, not per sandbox.
    picod_parser().parse_args(["--listen", "0.0.0.0:49983", "--sandbox-id", "warm-up"])
    gc.collect()
    gc.freeze()
    with contextlib.suppress(OSError, AttributeError):  # glibc only: return freed heap
        ctypes.CDLL(None).malloc_trim(0)


def _start_ticks(pid: int) -> int:
    raw = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    return int(raw[raw.rindex(")") + 2 :].split()[19])


class Zygote:
    def __init__(self, control: socket.socket) -> None:
        self.control = control
        self._pid = os.getpid()
        self._pid_namespace = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        self._wake_read, wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(wake_write, False)
        signal.set_wakeup_fd(wake_write)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the poll; reaped there

    def serve(self) -> None:
        poller = select.poll()
        poller.register(self.control, select.POLLIN)
        poller.register(self._wake_read, select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll()}
            if self._wake_read in ready:
                with contextlib.suppress(BlockingIOError):
                    while os.read(self._wake_read, 512):
                        pass
            self._reap()
            if self.control.fileno() in ready and not self._answer():
                return

    def _reap(self) -> None:
        """Collect exited supervisors (the lifecycle service watches them by pidfd)."""
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return

    def _answer(self) -> bool:
        """Serve one request; False once the lifecycle service has gone."""
        try:
            message, fds, _, _ = socket.recv_fds(self.control, 64, MAX_FDS)
        except ConnectionError:
            return False
        if not message:
            return False
        try:
            if message != FORK or not fds:
                self.control.send(json.dumps({"error": "bad request"}).encode())
                return True
            self._fork(fds)
        finally:
            for fd in fds:
                os.close(fd)
        return True

    def _fork(self, fds: list[int]) -> None:
        """Fork the sandbox's init as pid 1 of a new pid namespace: the namespace is only
        the next child's, so the zygote's own goes back to its children at once."""
        try:
            namespaces.unshare(namespaces.CLONE_NEWPID)
            try:
                pid = os.fork()
            finally:
                if os.getpid() == self._pid:
                    namespaces.setns(self._pid_namespace, namespaces.CLONE_NEWPID)
        except OSError as error:
            self.control.send(json.dumps({"error": f"fork: {error}"}).encode())
            return
        if pid == 0:
            become_sandbox(fds)
        # Not reaped before this answer: the pid cannot have been reused yet.
        pidfd = os.pidfd_open(pid)
        try:
            reply = json.dumps({"pid": pid, "ticks": _start_ticks(pid)}).encode()
            socket.send_fds(self.control, [reply], [pidfd])
        finally:
            os.close(pidfd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zygote", description=__doc__.splitlines()[0])
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--preload-jwt", action="store_true")
    args = parser.parse_args(argv)
    control = socket.socket(fileno=args.control_fd)
    control.set_inheritable(False)
    try:
        # Each sandbox's init carries its marker in its command line (sandbox_init.py).
        namespaces.set_command_line(["/usr/bin/python3", "-m", "extproc.picod.zygote"])
    except OSError as error:
        reason = f"the kernel cannot set a process's command line (PR_SET_MM_MAP): {error}"
        control.send(json.dumps({"ready": False, "error": reason}).encode())
        return 1
    preload(args.preload_jwt)
    version = ".".join(str(v) for v in sys.version_info[:3])
    control.send(json.dumps({"ready": True, "python": version}).encode())
    Zygote(control).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
