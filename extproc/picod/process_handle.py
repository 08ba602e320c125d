"""One running process: its output fanned out to subscribers, its exit, its input.

Output is read as it arrives (no line buffering) and copied to every current subscriber;
a subscriber that attaches later sees only what comes after (envd does not replay
either). Each subscriber's queue is bounded in bytes: when one is full, picod stops
reading the process's pipes, so the kernel pipe blocks the writer (backpressure, as with
envd) instead of picod's memory growing. Subscribers leave promptly when their client
disconnects, so a gone client never holds a process back. Exit is observed through a
pidfd in the event loop, which also reaps the child; the end event follows every byte
that was already in the pipes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from extproc.core.errors import Conflict, InvalidArgument, NotFound
from extproc.picod.process_spawn import PtySize, Spawned, set_window_size

READ_CHUNK = 64 * 1024
# Per-subscriber queue: pause reading above HIGH bytes, resume below LOW.
QUEUE_HIGH_BYTES = 4 * 1024 * 1024
QUEUE_LOW_BYTES = 1024 * 1024
# At exit, read what is left in each pipe, but no more than this (a grandchild that
# inherited the pipe may keep writing forever).
DRAIN_LIMIT_BYTES = 4 * 1024 * 1024

# How Go's syscall.Signal.String() names signals: envd's `status` is ProcessState.String().
GO_SIGNAL_NAMES: dict[int, str] = {
    signal.SIGHUP: "hangup",
    signal.SIGINT: "interrupt",
    signal.SIGQUIT: "quit",
    signal.SIGILL: "illegal instruction",
    signal.SIGTRAP: "trace/breakpoint trap",
    signal.SIGABRT: "aborted",
    signal.SIGBUS: "bus error",
    signal.SIGFPE: "floating point exception",
    signal.SIGKILL: "killed",
    signal.SIGUSR1: "user defined signal 1",
    signal.SIGSEGV: "segmentation fault",
    signal.SIGUSR2: "user defined signal 2",
    signal.SIGPIPE: "broken pipe",
    signal.SIGALRM: "alarm clock",
    signal.SIGTERM: "terminated",
}

Stream = Literal["stdout", "stderr", "pty"]


@dataclass(frozen=True)
class Output:
    stream: str
    data: bytes


@dataclass(frozen=True)
class Exit:
    exit_code: int
    exited: bool
    status: str
    error: str | None

    @classmethod
    def from_returncode(cls, returncode: int) -> Exit:
        if returncode >= 0:
            status = f"exit status {returncode}"
            return cls(returncode, True, status, status if returncode else None)
        signum = -returncode
        status = "signal: " + GO_SIGNAL_NAMES.get(signum, f"signal {signum}")
        return cls(-1, False, status, status)


class Gone:
    """Returned by Subscription.next when the subscriber's client went away."""


GONE = Gone()


class Subscription:
    def __init__(self, process: ManagedProcess) -> None:
        self._process = process
        self._items: deque[Output | Exit] = deque()
        self.buffered = 0
        self._ready = asyncio.Event()
        self._gone = False

    def push(self, item: Output | Exit) -> None:
        self._items.append(item)
        if isinstance(item, Output):
            self.buffered += len(item.data)
        self._ready.set()

    def client_gone(self) -> None:
        self._gone = True
        self._ready.set()

    async def next(self, within: float) -> Output | Exit | Gone | None:
        """The next event; None after `within` seconds without one."""
        if not self._items and not self._gone:
            self._ready.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(within):
                    await self._ready.wait()
        if self._gone:
            return GONE
        if not self._items:
            return None
        item = self._items.popleft()
        if isinstance(item, Output):
            self.buffered -= len(item.data)
            if self.buffered < QUEUE_LOW_BYTES:
                self._process.maybe_resume()
        return item

    def close(self) -> None:
        self._process.unsubscribe(self)


class ManagedProcess:
    def __init__(
        self,
        spawned: Spawned,
        *,
        cmd: str,
        args: list[str],
        envs: dict[str, str],
        cwd: str | None,
        tag: str | None,
        on_exit: Callable[[ManagedProcess], None],
    ) -> None:
        self._popen: subprocess.Popen[bytes] = spawned.popen
        self.pid = spawned.popen.pid
        self.cmd, self.args, self.envs, self.cwd, self.tag = cmd, args, envs, cwd, tag
        self.is_pty = "pty" in spawned.outputs
        self._outputs = dict(spawned.outputs)  # stream -> fd, until EOF
        self._input_fd = spawned.input_fd
        self._input_lock = asyncio.Lock()
        self._subs: set[Subscription] = set()
        self._paused = False
        self._on_exit = on_exit
        self.exit: Exit | None = None
        self.deadline_hit = False
        self._deadline: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self._pidfd = os.pidfd_open(self.pid)
        self._loop.add_reader(self._pidfd, self._on_exit_ready)
        for stream, fd in self._outputs.items():
            self._loop.add_reader(fd, self._on_readable, stream, fd)

    # -- output ---------------------------------------------------------------------
    def subscribe(self) -> Subscription:
        sub = Subscription(self)
        if self.exit is not None:
            sub.push(self.exit)
        else:
            self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)
        self.maybe_resume()

    def _publish(self, item: Output | Exit) -> None:
        for sub in self._subs:
            sub.push(item)

    def _on_readable(self, stream: str, fd: int) -> None:
        try:
            data = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:  # EIO: every holder of the PTY's other side closed it
            data = b""
        if not data:
            self._close_output(stream)
            return
        self._publish(Output(stream, data))
        if any(sub.buffered > QUEUE_HIGH_BYTES for sub in self._subs):
            self._pause()

    def _pause(self) -> None:
        if not self._paused:
            self._paused = True
            for fd in self._outputs.values():
                self._loop.remove_reader(fd)

    def maybe_resume(self) -> None:
        if not self._paused or any(s.buffered >= QUEUE_LOW_BYTES for s in self._subs):
            return
        self._paused = False
        for stream, fd in self._outputs.items():
            self._loop.add_reader(fd, self._on_readable, stream, fd)

    def _close_output(self, stream: str) -> None:
        fd = self._outputs.pop(stream)
        self._loop.remove_reader(fd)
        if fd == self._input_fd:  # the PTY master is both; input closes with it
            self._input_fd = None
        os.close(fd)

    def _drain(self, stream: str, fd: int) -> None:
        left = DRAIN_LIMIT_BYTES
        while left > 0:
            try:
                data = os.read(fd, READ_CHUNK)
            except OSError:
                return
            if not data:
                return
            left -= len(data)
            self._publish(Output(stream, data))

    # -- exit -----------------------------------------------------------------------
    def _on_exit_ready(self) -> None:
        returncode = self._popen.poll()
        if returncode is None:
            return
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        for stream, fd in list(self._outputs.items()):
            self._drain(stream, fd)
            self._close_output(stream)
        if self._input_fd is not None:
            os.close(self._input_fd)
            self._input_fd = None
        if self._deadline is not None:
            self._deadline.cancel()
        self.exit = Exit.from_returncode(returncode)
        self._publish(self.exit)
        self._subs.clear()
        self._on_exit(self)

    def set_deadline(self, seconds: float) -> None:
        """Kill the process group `seconds` from now (Connect-Timeout-Ms on Start)."""
        self._deadline = self._loop.call_later(seconds, self._kill_quietly)

    def _kill_quietly(self) -> None:
        self.deadline_hit = True
        with contextlib.suppress(ProcessLookupError, NotFound):
            self.signal(signal.SIGKILL)

    # -- control --------------------------------------------------------------------
    def signal(self, signum: int) -> None:
        if self.exit is not None:
            raise NotFound(f"process {self.pid} has already exited")
        try:
            os.killpg(self.pid, signum)
        except ProcessLookupError as e:
            raise NotFound(f"process {self.pid} not found") from e

    async def write_input(self, data: bytes, *, pty: bool) -> None:
        if pty != self.is_pty:
            kind = "a PTY" if self.is_pty else "not a PTY"
            raise InvalidArgument(f"process {self.pid} is {kind}; send the other input kind")
        async with self._input_lock:
            view = memoryview(data)
            while view:
                fd = self._input_fd
                if fd is None:
                    raise Conflict(f"stdin of process {self.pid} is closed or was not enabled")
                try:
                    written = os.write(fd, view)
                except BlockingIOError:
                    await self._writable(fd)
                    continue
                except BrokenPipeError as e:
                    raise Conflict(f"process {self.pid} closed its stdin") from e
                view = view[written:]

    async def _writable(self, fd: int) -> None:
        ready = self._loop.create_future()
        self._loop.add_writer(fd, ready.set_result, None)
        try:
            await ready
        finally:
            self._loop.remove_writer(fd)

    def close_input(self) -> None:
        if self.is_pty:
            raise InvalidArgument("a PTY has no stdin to close; send Ctrl+D (0x04) instead")
        if self._input_fd is not None:
            os.close(self._input_fd)
            self._input_fd = None

    def resize(self, size: PtySize) -> None:
        fd = self._outputs.get("pty")
        if not self.is_pty:
            raise InvalidArgument(f"process {self.pid} is not a PTY")
        if fd is not None:
            set_window_size(fd, size)
