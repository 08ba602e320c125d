"""The few small HTTP requests the lifecycle service makes to a sandbox's own servers.

Health during start (`wait_ready`) and re-adoption, the interpreter's warm kernel, and
`/init` for a warm sandbox. Connections go through `connect`: with namespace isolation a
sandbox is reachable only from the hub namespace (`networking.HubSockets`); without it, over
loopback.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from extproc.core.errors import Unavailable
from extproc.core.readable import when_readable
from extproc.lifecycle.pooling import BACKGROUND
from extproc.lifecycle.processes import Watched

PICOD_PORT = 49983
INTERPRETER_PORT = 49999
# How many times the ready deadline a pool refill's low-priority start gets.
BACKGROUND_PATIENCE = 10

Connect = Callable[[str, int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


def _dechunked(body: bytes) -> bytes:
    """A chunked body's data (a streamed response, such as a Connect server stream)."""
    data, rest = b"", body
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        try:
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
        except ValueError as error:
            raise OSError("bad chunked body from the sandbox") from error
        if size == 0:
            break
        data, rest = data + rest[:size], rest[size + 2 :]
    return data


class Probe:
    def __init__(self, connect: Connect) -> None:
        self._connect = connect

    async def request(
        self,
        host: str,
        port: int,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
        limit_s: float,
    ) -> tuple[int, bytes]:
        """One HTTP/1.1 request with `Connection: close`: (status, raw body). Raises OSError
        or TimeoutError."""
        async with asyncio.timeout(limit_s):
            reader, writer = await self._connect(host, port)
            try:
                lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
                lines += [f"{k}: {v}" for k, v in headers.items()]
                lines.append(f"Content-Length: {len(body)}")
                writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
                raw = await reader.read(65536)
                while len(raw) < 65536 and (more := await reader.read(65536)):
                    raw += more
            finally:
                writer.close()
        status_line, _, rest = raw.partition(b"\r\n")
        parts = status_line.split()
        if len(parts) < 2 or not parts[1].isdigit():
            raise OSError(f"bad HTTP status line from the sandbox: {status_line[:80]!r}")
        head, _, body = rest.partition(b"\r\n\r\n")
        if b"transfer-encoding: chunked" in head.lower():
            body = _dechunked(body)
        return int(parts[1]), body

    async def picod_status(
        self, host: str, method: str, path: str, headers: dict[str, str], body: bytes,
        limit_s: float,
    ) -> int:  # fmt: skip
        status, _ = await self.request(host, PICOD_PORT, method, path, headers, body, limit_s)
        return status

    async def in_use(self, host: str) -> bool:
        """True if something already listens on host:49983 (another service's sandbox, or
        a stray): starting a picod there would fail to bind while /health answered."""
        try:
            async with asyncio.timeout(0.5):
                _, writer = await self._connect(host, PICOD_PORT)
        except (OSError, TimeoutError):
            return False
        writer.close()
        return True

    async def is_healthy(self, host: str, limit_s: float = 1.0) -> bool:
        try:
            return await self.picod_status(host, "GET", "/health", {}, b"", limit_s) == 204
        except (OSError, TimeoutError):
            return False

    async def has_kernel(self, host: str, access_token: str, limit_s: float = 1.0) -> bool:
        """True once the interpreter lists a context: its warm default kernel has started
        and answered (its /health is 200 from the moment it listens, before the kernel)."""
        headers = {"X-Access-Token": access_token}
        try:
            status, body = await self.request(
                host, INTERPRETER_PORT, "GET", "/contexts", headers, b"", limit_s
            )
        except (OSError, TimeoutError):
            return False
        return status == 200 and body.lstrip()[:1] == b"[" and body.strip() != b"[]"

    async def wait_ready(
        self, process: Watched, host: str, deadline_s: float, kernel_token: str | None = None
    ) -> None:
        """Return when picod at `host` answers GET /health 204 and, given `kernel_token`
        (an interpreter sandbox's access token), the interpreter has its warm kernel; raise
        Unavailable if the sandbox dies or is late.

        A forked picod says when it serves (a byte on `process.ready_fd`); then one /health
        through the sandbox's network confirms it. Otherwise (no isolation, or the pipe
        closed without a word) /health is polled with a short backoff (1 ms doubling to
        20 ms): a refused connect costs ~50 µs. A pool refill's sandbox starts at a low
        priority, which on a busy machine can take many times longer (an interpreter's
        kernel most): it gets BACKGROUND_PATIENCE times the deadline, polled less often.
        """
        longest_delay = 0.02
        if BACKGROUND.get():
            deadline_s *= BACKGROUND_PATIENCE
            longest_delay = 0.5
        give_up = time.monotonic() + deadline_s
        if process.ready_fd is not None:
            try:
                async with asyncio.timeout(deadline_s):
                    await _notified(process)
            except TimeoutError:
                pass  # the polling below reports it
            finally:
                process.close_ready()
        delay = 0.001
        picod_up = False
        while True:
            if process.exited.done():
                raise Unavailable("the sandbox process exited during start; see its picod.log")
            picod_up = picod_up or await self.is_healthy(host, limit_s=0.5)
            if picod_up and (
                kernel_token is None or await self.has_kernel(host, kernel_token, limit_s=0.5)
            ):
                return
            if time.monotonic() > give_up:
                raise Unavailable(f"the sandbox did not become ready within {deadline_s:g} s")
            await asyncio.wait([process.exited], timeout=delay)
            delay = min(delay * 2, longest_delay)


async def _notified(process: Watched) -> None:
    """Until picod's byte (or the pipe's end: picod gone) arrives, or the sandbox exits."""
    if process.ready_fd is None:
        return
    async with when_readable(process.ready_fd) as readable:
        await asyncio.wait([readable, process.exited], return_when=asyncio.FIRST_COMPLETED)
