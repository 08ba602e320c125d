"""Serving picod: uvicorn in-process (core/asgi_server.py), signals, a bounded shutdown.

On SIGTERM/SIGINT picod first stops its children (SIGTERM to every process group, SIGKILL
after the grace), so open command streams end with a real `end` event, then uvicorn closes,
and the app releases its filesystem watchers.

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

from extproc.core import asgi_server
from extproc.core.request_context import AsgiRequestContext
from extproc.picod.app import build_app
from extproc.picod.binding import Binding
from extproc.picod.settings import PicodSettings

# Seconds children get between SIGTERM and SIGKILL, and open requests get afterwards.
SHUTDOWN_GRACE_SECONDS = 3.0


class _ReadyReport:
    """What picod does once it serves: collect garbage again, and say so on `ready_fd`."""

    def __init__(self, ready_fd: int | None) -> None:
        self._ready_fd = ready_fd

    def __call__(self) -> None:
        gc.freeze()
        gc.enable()
        if self._ready_fd is not None:
            with contextlib.suppress(OSError):  # nobody listening any more: fine
                os.write(self._ready_fd, b"1")
            os.close(self._ready_fd)
            self._ready_fd = None


async def serve(settings: PicodSettings, binding: Binding | None = None) -> None:
    app = build_app(settings, binding)
    config = asgi_server.config(
        AsgiRequestContext(app),
        settings.host,
        settings.port,
        grace_s=SHUTDOWN_GRACE_SECONDS,
        # Command streams are idle between keepalives (the SDK asks every 50 s).
        timeout_keep_alive=650,
    )
    server = asgi_server.Server(config, _ReadyReport(settings.ready_fd))
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
