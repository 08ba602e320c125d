"""The few small HTTP requests the lifecycle service makes to a sandbox's own servers.

Health during start and re-adoption, the interpreter's warm kernel, and `/init` for a warm
sandbox. Connections go through `connect`: with namespace isolation a sandbox is reachable
only from the hub namespace (`networking.HubSockets`); without it, over loopback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

PICOD_PORT = 49983
INTERPRETER_PORT = 49999

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
