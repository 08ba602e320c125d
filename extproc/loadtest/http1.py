"""A lean keep-alive HTTP/1.1 client for the fixed-rate data plane.

httpx spends about 2-6 ms of CPU per request here (its connection pool takes anyio locks and
looks for trio on every request), so one client core tops out near 200-500 requests a
second, below what the gateway serves. This client writes a request prepared once as bytes
and parses the reply with httptools (llhttp, already a dependency for picod's uvicorn): one
connection carries one request at a time, the body is counted and dropped. TLS is asyncio's.
HTTP/2 is not spoken: the issue's targets are measured over HTTP/1.1 too, and the SDK's own
HTTP/2 path is exercised by the lifecycle scenario.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools


@dataclass(frozen=True)
class Origin:
    """Where a connection goes: scheme, host, port."""

    tls: bool
    host: str
    port: int

    @classmethod
    def from_url(cls, url: str) -> Origin:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http(s) URL, got {url!r}")
        tls = parts.scheme == "https"
        return cls(tls, parts.hostname, parts.port or (443 if tls else 80))

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.tls else 80
        return host if self.port == default else f"{host}:{self.port}"


def request_bytes(
    method: str, origin: Origin, path: str, headers: dict[str, str], body: bytes = b""
) -> bytes:
    """One whole HTTP/1.1 request, ready to be written as many times as needed."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {origin.authority}"]
    lines += [f"{name}: {value}" for name, value in headers.items() if name.lower() != "host"]
    if body or method not in ("GET", "HEAD"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Http1Connection(asyncio.Protocol):
    """One connection; `exchange` sends a prepared request and returns the reply's status."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[int] | None = None
        self.closed = False

    @classmethod
    async def open(cls, origin: Origin, tls: ssl.SSLContext | None) -> Http1Connection:
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(
            cls, origin.host, origin.port, ssl=tls if origin.tls else None
        )
        return connection

    async def exchange(self, request: bytes) -> int:
        if self.closed or self._transport is None:
            raise ConnectionResetError("connection closed")
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        self._transport.write(request)
        return await waiter

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # a stream socket's

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(ConnectionError(f"bad HTTP reply: {error}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(exc or ConnectionResetError("connection closed by the server"))

    # httptools callbacks

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if not self._parser.should_keep_alive():
            self.close()
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(status)

    def _fail(self, error: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
