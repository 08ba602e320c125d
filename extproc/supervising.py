"""`up`'s children and the supervisor that keeps them running.

Each child runs in its own session and process group, so that one signal reaches everything
it started (its own helpers; sandboxes have sessions of their own and outlive it). Its output
is copied to stderr: in text, each line prefixed with its name; in JSON, each line a JSON
object (core/logs.py `child_line`).

One crash is not an outage: a child that exits while `up` is not stopping is logged and
started again alone, after a delay that doubles (`RestartPolicy.backoff`) and starts over
once the child has run `healthy_after_s`. The others keep running: Envoy and the edge keep
serving running sandboxes from the edge's routing directory while the lifecycle service
restarts, and the restarted lifecycle service adopts the sandboxes it left behind
(lifecycle/adopting.py). A child that exits `crash_limit` times within `crash_window_s` is
broken, not unlucky (a bad config, a port taken for good): the supervisor gives up, and `up`
stops everything and exits non-zero naming it.

The decision (`Crashes.after_exit`) is a pure function of the policy and the exit times, so
it is tested with a fake clock; the loop around it only waits, starts and logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from extproc.core.backoff import Backoff
from extproc.core.logs import child_line
from extproc.core.readable import when_readable

RESTART_BACKOFF = Backoff(initial_s=0.1, max_s=5.0)


@dataclass(frozen=True)
class RestartPolicy:
    # seconds before restarting a child: 0.1, doubling with each crash in a row up to 5.
    backoff: Backoff = RESTART_BACKOFF
    # seconds a child must run for its next crash to count as the first in a row. 30.
    healthy_after_s: float = 30.0
    # exits within `crash_window_s` that make the supervisor give up. Default 5.
    crash_limit: int = 5
    # seconds over which `crash_limit` counts exits. Default 60.
    crash_window_s: float = 60.0


@dataclass
class Crashes:
    """One child's exits: the streak that sets the backoff, the times that set giving up."""

    streak: int = 0
    recent: deque[float] = field(default_factory=deque)

    def after_exit(self, policy: RestartPolicy, started: float, exited: float) -> float | None:
        """Seconds to wait before restarting a child that ran from `started` to `exited`
        (monotonic seconds), or None to give up on it."""
        self.recent.append(exited)
        while self.recent and self.recent[0] <= exited - policy.crash_window_s:
            self.recent.popleft()
        if len(self.recent) >= policy.crash_limit:
            return None
        if exited - started >= policy.healthy_after_s:
            self.streak = 0
        delay = policy.backoff.delay(self.streak)
        self.streak += 1
        return delay


# --- one child -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Child:
    name: str
    process: asyncio.subprocess.Process
    # resolves to the exit status (negative: killed by that signal)
    exited: asyncio.Task[int]
    # copies the child's output to stderr; may outlive it while a grandchild holds the pipe
    pump: asyncio.Task[None]
    # time.monotonic() when it was started
    started: float


# The longest line of a child's output passed on. A JSON log line holds a whole traceback.
MAX_LINE_BYTES = 1 << 20


async def _pump(name: str, stream: asyncio.StreamReader, log_format: str) -> None:
    out = sys.stderr.buffer
    dropping = False
    while True:
        try:
            line = await stream.readline()
        except ValueError:
            # Longer than MAX_LINE_BYTES: asyncio dropped what it had of it. Drop the rest
            # too, say so, and keep reading: a pump that stopped would leave the child
            # blocked on a full pipe.
            if not dropping:
                line = f"(a line of over {MAX_LINE_BYTES} bytes was dropped)\n".encode()
                out.write(child_line(name, line, log_format))
            dropping = True
            continue
        if not line:
            return
        if dropping:  # the dropped line's end
            dropping = False
            continue
        out.write(child_line(name, line, log_format))
        out.flush()


async def start_child(name: str, argv: list[str], log_format: str = "text") -> Child:
    """Start `argv`; its output goes to stderr as `log_format` lines (core/logs.py)."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        # its own session and process group: one signal reaches everything it started
        start_new_session=True,
        limit=MAX_LINE_BYTES,
    )
    assert process.stdout is not None
    return Child(
        name=name,
        process=process,
        exited=asyncio.create_task(_exit_status(process), name=f"up-wait-{name}"),
        pump=asyncio.create_task(_pump(name, process.stdout, log_format), name=f"up-output-{name}"),
        started=time.monotonic(),
    )


async def _exit_status(process: asyncio.subprocess.Process) -> int:
    """The child's exit status as soon as it has exited.

    Not `process.wait()`: on Python 3.11 that also waits for the output pipe to close, and
    anything the child started and left behind (a helper it was about to kill when it was
    SIGKILLed) holds that pipe open, so a crash went unnoticed until the helper ended. A
    pidfd becomes readable when the process itself exits.
    """
    try:
        pidfd = os.pidfd_open(process.pid)
    except ProcessLookupError:  # already reaped: its status is on its way to `process`
        pass
    else:
        try:
            async with when_readable(pidfd) as exited:
                await exited
        finally:
            os.close(pidfd)
    # asyncio's child watcher reaps it and records the status a moment later; it offers no
    # event for that short of `wait()`, which is what waits for the pipe
    while process.returncode is None:  # noqa: ASYNC110
        await asyncio.sleep(0.005)
    return process.returncode


def signal_group(child: Child, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.process.pid, signum)


async def stop_children(children: list[Child], grace_s: float, say: Callable[[str], None]) -> None:
    """SIGTERM every group, wait `grace_s`, SIGKILL what is left of any group."""
    for child in children:
        if not child.exited.done():
            signal_group(child, signal.SIGTERM)
    pending = [child.exited for child in children if not child.exited.done()]
    if pending:
        await asyncio.wait(pending, timeout=grace_s)
    for child in children:
        if not child.exited.done():
            say(f"{child.name} did not stop within {grace_s:g} s; killing it")
        # also reaps anything the child left behind in its group
        signal_group(child, signal.SIGKILL)
    await asyncio.gather(*(child.exited for child in children))
    await _drain([child.pump for child in children])


async def _drain(pumps: list[asyncio.Task[None]]) -> None:
    for pump in pumps:
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(pump, timeout=1.0)
        pump.cancel()


def exit_text(child: Child) -> str:
    status = child.exited.result()
    how = f"was killed by signal {-status}" if status < 0 else f"exited with status {status}"
    return f"{child.name} {how}"


# --- the supervisor ------------------------------------------------------------------------


class Supervisor:
    """Starts `commands` (name -> argv), restarts whichever exits, stops them all.

    `before_restart[name]` runs before a restart (Envoy leaves its admin socket behind);
    `serving[name]` waits until a restarted child serves, only to log how long it took.
    """

    def __init__(
        self,
        commands: Mapping[str, list[str]],
        policy: RestartPolicy,
        say: Callable[[str], None],
        *,
        before_restart: Mapping[str, Callable[[], None]] | None = None,
        serving: Mapping[str, Callable[[], Awaitable[None]]] | None = None,
        log_format: str = "text",
    ) -> None:
        self.commands = dict(commands)
        # how the children's output is passed on (core/logs.py child_line)
        self.log_format = log_format
        self.policy = policy
        self.say = say
        self.before_restart = dict(before_restart or {})
        self.serving = dict(serving or {})
        self.children: dict[str, Child] = {}
        self.crashes = {name: Crashes() for name in commands}
        self.restarts = 0
        # pumps of children that were replaced, drained on stop
        self._old_pumps: list[asyncio.Task[None]] = []
        self._serving_waits: dict[str, asyncio.Task[None]] = {}

    async def start_all(self) -> None:
        for name, argv in self.commands.items():
            self.children[name] = await start_child(name, argv, self.log_format)

    async def supervise(self, stop: asyncio.Event) -> int:
        """Until `stop` is set (0) or a child keeps crashing (1, after naming it)."""
        watchers = [
            asyncio.create_task(self._keep(name, stop), name=f"up-supervise-{name}")
            for name in self.children
        ]
        stopping = asyncio.create_task(stop.wait(), name="up-stop-signal")
        try:
            done, _ = await asyncio.wait([stopping, *watchers], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            for watcher in watchers:
                watcher.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
        code = 0
        for watcher in watchers:
            if watcher not in done or watcher.cancelled():
                continue
            if (error := watcher.exception()) is not None:  # could not even start it again
                self.say(f"{watcher.get_name()} failed: {error!r}; stopping the others")
                code = 1
            elif watcher.result():
                code = 1
        return code

    async def _keep(self, name: str, stop: asyncio.Event) -> bool:
        """Restart `name` whenever it exits; True when it was given up on."""
        while True:
            child = self.children[name]
            await asyncio.shield(child.exited)
            if stop.is_set():
                return False
            exited = time.monotonic()
            signal_group(child, signal.SIGKILL)  # whatever it left in its group
            self._old_pumps.append(child.pump)
            delay = self.crashes[name].after_exit(self.policy, child.started, exited)
            if delay is None:
                self.say(
                    f"{exit_text(child)}; {self.policy.crash_limit} exits within "
                    f"{self.policy.crash_window_s:g} s: giving up on it, stopping the others"
                )
                return True
            self.say(f"{exit_text(child)}; restarting it in {delay:g} s")
            await asyncio.sleep(delay)
            if stop.is_set():
                return False
            if (prepare := self.before_restart.get(name)) is not None:
                prepare()
            starting = asyncio.create_task(start_child(name, self.commands[name], self.log_format))
            try:
                restarted = await asyncio.shield(starting)
            except asyncio.CancelledError:
                # stopping: register it all the same, so that stop() reaches it
                self.children[name] = await starting
                raise
            self.children[name] = restarted
            self.restarts += 1
            self.say(f"restarted {name} (pid {restarted.process.pid})")
            if (wait := self.serving.get(name)) is not None:
                if (earlier := self._serving_waits.pop(name, None)) is not None:
                    earlier.cancel()  # that one died before it served
                self._serving_waits[name] = asyncio.create_task(
                    self._log_serving(restarted, wait), name=f"up-{name}-serving"
                )

    async def _log_serving(self, child: Child, wait: Callable[[], Awaitable[None]]) -> None:
        with contextlib.suppress(Exception):
            await wait()
            took = time.monotonic() - child.started
            self.say(f"{child.name} serves again, {took:.2f} s after its restart")

    async def stop(self, grace_s: float) -> None:
        for task in self._serving_waits.values():
            task.cancel()
        await asyncio.gather(*self._serving_waits.values(), return_exceptions=True)
        await stop_children(list(self.children.values()), grace_s, self.say)
        await _drain(self._old_pumps)
