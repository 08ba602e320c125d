"""Serving picod: uvicorn in-process, signals, and a bounded shutdown.

uvicorn runs with httptools on the caller's uvloop, with no access log (a command
stream is one long request; per-request logs would only cost time), no websocket
protocol (envd has no websocket routes; uvicorn would otherwise import `websockets`) and
no proxy-headers middleware (picod never looks at the client address). On SIGTERM/SIGINT
picod first stops its children (SIGTERM to every process group, SIGKILL after the
grace), so open command streams end with a real `end` event, then uvicorn closes, and
the app releases its filesystem watchers.

The cyclic garbage collector is off while picod imports and builds its app (the command
turns it off before importing this module): collections over a heap that only grows are
wasted start-up work. Once serving, the start-up heap is frozen out of future
collections (`gc.freeze`) and collection is turned back on.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import socket
from collections.abc import Iterator

import uvicorn

from extproc.core.request_context import AsgiRequestContext
from extproc.picod.app import build_app
from extproc.picod.binding import Binding
from extproc.picod.settings import PicodSettings

# Seconds children get between SIGTERM and SIGKILL, and open requests get afterwards.
SHUTDOWN_GRACE_SECONDS = 3.0


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn's version re-raises the signal after serving, which would end the
        # process before picod's own shutdown ran; picod handles the signals itself.
        yield

    def __init__(self, config: uvicorn.Config, ready_fd: int | None) -> None:
        super().__init__(config)
        self._ready_fd = ready_fd

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        gc.freeze()
        gc.enable()
        if self._ready_fd is not None and self.started:
            with contextlib.suppress(OSError):  # nobody listening any more: fine
                os.write(self._ready_fd, b"1")
            os.close(self._ready_fd)
            self._ready_fd = None


async def serve(settings: PicodSettings, binding: Binding | None = None) -> None:
    app = build_app(settings, binding)
    config = uvicorn.Config(
        AsgiRequestContext(app),
        host=settings.host,
        port=settings.port,
        loop="none",
        http="httptools",
        ws="none",
        lifespan="off",
        interface="asgi3",
        proxy_headers=False,
        access_log=False,
        server_header=False,
        log_level="warning",
        log_config=None,  # uvicorn's lines go through the process's handler (core/logs.py)
        timeout_graceful_shutdown=int(SHUTDOWN_GRACE_SECONDS),
        # Command streams are idle between keepalives (the SDK asks every 50 s).
        timeout_keep_alive=650,
    )
    server = _Server(config, settings.ready_fd)
    loop = asyncio.get_running_loop()
    stopping: asyncio.Task[None] | None = None

    async def stop() -> None:
        await app.processes.shutdown(SHUTDOWN_GRACE_SECONDS)
        server.should_exit = True

    def on_signal() -> None:
        nonlocal stopping
        if stopping is None:
            stopping = loop.create_task(stop(), name="picod-shutdown")
        else:  # a second signal: stop waiting
            server.force_exit = True

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal)
    try:
        await server.serve()
    finally:
        await app.processes.shutdown(0.5)
        app.close()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def run(settings: PicodSettings, binding: Binding | None = None) -> int:
    import uvloop

    uvloop.run(serve(settings, binding))
    return 0
