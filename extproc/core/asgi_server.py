"""uvicorn run in-process, the way each of our ASGI servers runs it (picod, the code
interpreter, the lifecycle's volume content API).

uvicorn runs with httptools on the caller's loop, with no access log (a command or execute
stream is one long request; per-request lines would only cost time: Envoy's access log has
them), no websocket protocol (no route here is one; uvicorn would otherwise import
`websockets`), no lifespan, and no proxy-headers middleware (nothing here looks at the
client address). Its own log lines go through the process's handler (core/logs.py).

The processes that run these servers handle SIGTERM/SIGINT themselves, to stop their own
work in order (picod's children, the interpreter's kernels, the lifecycle's sandboxes):
uvicorn's signal capture would re-raise the signal after serving and end the process before
that ran, so `Server` leaves signals alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn


def config(app: Any, host: str, port: int, *, grace_s: float, **options: Any) -> uvicorn.Config:
    """uvicorn's Config for `app` on `host:port` as described above; open requests get
    `grace_s` seconds at shutdown. `options` adds or overrides Config arguments."""
    settings: dict[str, Any] = {
        "loop": "none",
        "http": "httptools",
        "ws": "none",
        "lifespan": "off",
        "interface": "asgi3",
        "proxy_headers": False,
        "access_log": False,
        "server_header": False,
        "log_level": "warning",
        "log_config": None,
        "timeout_graceful_shutdown": int(grace_s),
    }
    settings.update(options)
    return uvicorn.Config(app, host=host, port=port, **settings)


class Server(uvicorn.Server):
    """uvicorn's server without its signal handling; `listening` is set, and `on_serving`
    called, once it serves."""

    def __init__(self, config: uvicorn.Config, on_serving: Callable[[], None] | None = None):
        super().__init__(config)
        self.listening = asyncio.Event()
        self._on_serving = on_serving

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.listening.set()
            if self._on_serving is not None:
                self._on_serving()
