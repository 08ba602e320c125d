"""`process.Process`: the Connect service the SDK's commands and pty modules drive.

The handlers translate between protobuf messages and ManagedProcess; the table keeps
processes by pid and by tag. Exited processes stay findable for a while (bounded), so a
client that attaches after the exit still gets its `end` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import signal
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Any

from connectrpc.request import RequestContext
from protobuf import Oneof

from extproc._gen.process import process_pb as pb
from extproc.core.errors import DeadlineExceeded, InvalidArgument, NotFound
from extproc.picod.environment import Environment
from extproc.picod.process_handle import Exit, Gone, ManagedProcess, Output, Subscription
from extproc.picod.process_spawn import PtySize, process_env, spawn
from extproc.picod.users import requested_user_in, resolve_user

log = logging.getLogger(__name__)

# envd's default keepalive period when the client sends no Keepalive-Ping-Interval.
DEFAULT_KEEPALIVE_SECONDS = 90.0
# Exited processes remembered for late Connect calls.
EXITED_KEPT = 256

Ctx = RequestContext[Any, Any]
SIGNALS = {pb.Signal.SIGTERM: signal.SIGTERM, pb.Signal.SIGKILL: signal.SIGKILL}


class ClientWatch:
    """Set by the app per streaming request: lets a stream learn its client has gone.

    connectrpc notices a disconnect only when the handler yields; a stream idle on a
    quiet process would keep its subscription (and its backpressure) until then.
    """

    def __init__(self) -> None:
        self.gone = False
        self._callbacks: list[Callable[[], None]] = []

    def on_gone(self, callback: Callable[[], None]) -> None:
        if self.gone:
            callback()
        else:
            self._callbacks.append(callback)

    def mark_gone(self) -> None:
        self.gone = True
        for callback in self._callbacks:
            callback()
        self._callbacks.clear()


CLIENT_WATCH: contextvars.ContextVar[ClientWatch | None] = contextvars.ContextVar(
    "picod_client_watch", default=None
)


class ProcessTable:
    def __init__(self) -> None:
        self._running: dict[int, ManagedProcess] = {}
        self._exited: OrderedDict[int, ManagedProcess] = OrderedDict()
        self._tags: dict[str, ManagedProcess] = {}
        self._none_running = asyncio.Event()
        self._none_running.set()

    def add(self, process: ManagedProcess) -> None:
        self._exited.pop(process.pid, None)  # the OS reused a pid
        self._running[process.pid] = process
        self._none_running.clear()
        if process.tag:
            self._tags[process.tag] = process

    def exited(self, process: ManagedProcess) -> None:
        self._running.pop(process.pid, None)
        if not self._running:
            self._none_running.set()
        self._exited[process.pid] = process
        while len(self._exited) > EXITED_KEPT:
            _, old = self._exited.popitem(last=False)
            if old.tag and self._tags.get(old.tag) is old:
                del self._tags[old.tag]

    def running(self) -> list[ManagedProcess]:
        return list(self._running.values())

    def select(self, selector: pb.ProcessSelector | None) -> ManagedProcess:
        match selector.selector if selector is not None else None:
            case Oneof(field="pid", value=pid):
                found = self._running.get(pid) or self._exited.get(pid)
                what = f"pid {pid}"
            case Oneof(field="tag", value=tag):
                found = self._tags.get(tag)
                what = f"tag {tag!r}"
            case _:
                raise InvalidArgument("process selector must name a pid or a tag")
        if found is None:
            raise NotFound(f"process with {what} not found")
        return found

    async def shutdown(self, grace: float) -> None:
        """SIGTERM every process group, SIGKILL what is left after `grace` seconds."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for process in self.running():
                with contextlib.suppress(NotFound):
                    process.signal(sig)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self._none_running.wait()


def _event(**kwargs: Any) -> pb.ProcessEvent:
    field, value = kwargs.popitem()
    return pb.ProcessEvent(event=Oneof(field, value))


def _keepalive_seconds(ctx: Ctx) -> float:
    raw = ctx.request_headers.get("keepalive-ping-interval")
    try:
        return max(1.0, float(raw)) if raw else DEFAULT_KEEPALIVE_SECONDS
    except ValueError:
        return DEFAULT_KEEPALIVE_SECONDS


def _pty_size(pty: pb.PTY | None) -> PtySize | None:
    if pty is None:
        return None
    size = pty.size or pb.PTY.Size()
    # A zero size would make full-screen programs misbehave; envd defaults likewise.
    return PtySize(cols=size.cols or 80, rows=size.rows or 24)


class ProcessService:
    def __init__(self, environment: Environment, table: ProcessTable) -> None:
        self._env = environment
        self._table = table

    async def list(self, request: pb.ListRequest, ctx: Ctx) -> pb.ListResponse:
        return pb.ListResponse(
            processes=[
                pb.ProcessInfo(
                    config=pb.ProcessConfig(cmd=p.cmd, args=p.args, envs=p.envs, cwd=p.cwd),
                    pid=p.pid,
                    tag=p.tag,
                )
                for p in self._table.running()
            ]
        )

    async def start(self, request: pb.StartRequest, ctx: Ctx) -> AsyncIterator[pb.StartResponse]:
        config = request.process or pb.ProcessConfig()
        user = resolve_user(self._env, requested_user_in(ctx.request_headers))
        cwd = (
            user.resolve_path(config.cwd)
            if config.cwd
            else (self._env.default_workdir or user.home)
        )
        envs = dict(config.envs)
        spawned = spawn(
            [config.cmd, *config.args],
            process_env(user, self._env.env_vars, envs),
            cwd,
            user,
            stdin=request.stdin if request.has_field("stdin") else True,
            pty_size=_pty_size(request.pty),
        )
        process = ManagedProcess(
            spawned,
            cmd=config.cmd,
            args=list(config.args),
            envs=envs,
            cwd=config.cwd if config.has_field("cwd") else None,
            tag=request.tag if request.has_field("tag") else None,
            on_exit=self._table.exited,
        )
        self._table.add(process)
        # Not the command line or its env: either may hold the tenant's secrets.
        log.info("started process %d as %s", process.pid, user.name)
        deadline = ctx.timeout_ms
        if deadline is not None:
            process.set_deadline(max(0.0, deadline / 1000))
        async for event in _stream(process, process.subscribe(), ctx, owns_deadline=True):
            yield pb.StartResponse(event=event)

    async def connect(
        self, request: pb.ConnectRequest, ctx: Ctx
    ) -> AsyncIterator[pb.ConnectResponse]:
        process = self._table.select(request.process)
        async for event in _stream(process, process.subscribe(), ctx):
            yield pb.ConnectResponse(event=event)

    async def update(self, request: pb.UpdateRequest, ctx: Ctx) -> pb.UpdateResponse:
        process = self._table.select(request.process)
        size = _pty_size(request.pty)
        if size is not None:
            process.resize(size)
        return pb.UpdateResponse()

    async def stream_input(
        self, request: AsyncIterator[pb.StreamInputRequest], ctx: Ctx
    ) -> pb.StreamInputResponse:
        process: ManagedProcess | None = None
        async for message in request:
            match message.event:
                case Oneof(field="start", value=start):
                    process = self._table.select(start.process)
                case Oneof(field="data", value=data):
                    if process is None:
                        raise InvalidArgument("StreamInput must begin with a start event")
                    await _write(process, data.input)
                case _:
                    pass  # keepalive, or an event kind this picod does not know
        return pb.StreamInputResponse()

    async def send_input(self, request: pb.SendInputRequest, ctx: Ctx) -> pb.SendInputResponse:
        await _write(self._table.select(request.process), request.input)
        return pb.SendInputResponse()

    async def send_signal(self, request: pb.SendSignalRequest, ctx: Ctx) -> pb.SendSignalResponse:
        process = self._table.select(request.process)
        signum = SIGNALS.get(request.signal)
        if signum is None:
            raise InvalidArgument(f"unsupported signal {request.signal!r}")
        process.signal(signum)
        return pb.SendSignalResponse()

    async def close_stdin(self, request: pb.CloseStdinRequest, ctx: Ctx) -> pb.CloseStdinResponse:
        self._table.select(request.process).close_input()
        return pb.CloseStdinResponse()


async def _write(process: ManagedProcess, data: pb.ProcessInput | None) -> None:
    match data.input if data is not None else None:
        case Oneof(field="stdin", value=chunk):
            await process.write_input(chunk, pty=False)
        case Oneof(field="pty", value=chunk):
            await process.write_input(chunk, pty=True)
        case _:
            raise InvalidArgument("input must carry stdin or pty bytes")


async def _stream(
    process: ManagedProcess, sub: Subscription, ctx: Ctx, *, owns_deadline: bool = False
) -> AsyncIterator[pb.ProcessEvent]:
    """start, then output as it comes, keepalives while idle, then end.

    The stream whose deadline killed the process ends with deadline_exceeded, not with
    the kill's `end`: that is what the SDK reports as its command timeout.
    """
    interval = _keepalive_seconds(ctx)
    remaining_ms = ctx.timeout_ms
    deadline = None if remaining_ms is None else time.monotonic() + remaining_ms / 1000
    watch = CLIENT_WATCH.get()
    if watch is not None:
        watch.on_gone(sub.client_gone)
    try:
        yield _event(start=pb.ProcessEvent.StartEvent(pid=process.pid))
        while True:
            wait = interval
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    raise DeadlineExceeded("the process stream reached its deadline")
            item = await sub.next(wait)
            match item:
                case Output(stream=stream, data=data):
                    data_event = pb.ProcessEvent.DataEvent(output=Oneof(stream, data))
                    yield _event(data=data_event)
                case Exit() if owns_deadline and process.deadline_hit:
                    raise DeadlineExceeded("the command reached its timeout and was killed")
                case Exit() as end:
                    yield _event(
                        end=pb.ProcessEvent.EndEvent(
                            exit_code=end.exit_code,
                            exited=end.exited,
                            status=end.status,
                            error=end.error,
                        )
                    )
                    return
                case Gone():
                    return
                case None if deadline is None or time.monotonic() < deadline:
                    yield _event(keepalive=pb.ProcessEvent.KeepAlive())
    finally:
        sub.close()
