"""Waiting, in asyncio, for a file descriptor the event loop does not own to be readable."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator


@contextlib.asynccontextmanager
async def when_readable(fd: int | socket.socket) -> AsyncIterator[asyncio.Future[None]]:
    """A future done once `fd` is readable; the loop stops watching `fd` when the block
    ends, so the caller may await it alongside other things (or not at all)."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        yield ready
    finally:
        loop.remove_reader(fd)
