"""The data plane's lean HTTP/1.1 client and its open-loop pacing, against a small server in
the test's own event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from extproc.loadtest.data_plane import EnvdTarget, PacedLoad
from extproc.loadtest.http1 import Http1Connection, Origin, request_bytes
from extproc.loadtest.recording import Recorder
from extproc.loadtest.settings import DataPlaneSettings

Reply = Callable[[bytes], Awaitable[bytes]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


class Server:
    """Answers each request on a connection in turn with `reply(request)`."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.connections = 0
        self.requests: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                request = await read_request(reader)
                self.requests.append(request)
                writer.write(await self.reply(request))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


Serve = Callable[[Reply], Awaitable[tuple[Server, Origin]]]


async def ok(_: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[asyncio.Server] = []

    async def start(reply: Reply) -> tuple[Server, Origin]:
        server = Server(reply)
        listening = await asyncio.start_server(server.handle, "127.0.0.1", 0)
        servers.append(listening)
        port = listening.sockets[0].getsockname()[1]
        return server, Origin.from_url(f"http://127.0.0.1:{port}")

    yield start
    for listening in servers:
        listening.close()
        await listening.wait_closed()


def test_origins_and_request_bytes() -> None:
    origin = Origin.from_url("https://49983-abc.e2b.example.com/")
    assert (origin.tls, origin.port, origin.authority) == (True, 443, "49983-abc.e2b.example.com")
    assert Origin.from_url("http://[::1]:8081").authority == "[::1]:8081"
    with pytest.raises(ValueError, match="http"):
        Origin.from_url("ftp://host")
    raw = request_bytes("POST", Origin.from_url("http://h:81"), "/x", {"A": "1"}, b"{}")
    assert raw == b"POST /x HTTP/1.1\r\nHost: h:81\r\nA: 1\r\nContent-Length: 2\r\n\r\n{}"
    assert b"Content-Length" not in request_bytes("GET", origin, "/health", {})


async def test_one_connection_carries_request_after_request(serve: Serve) -> None:
    server, origin = await serve(ok)
    connection = await Http1Connection.open(origin, None)
    request = request_bytes("GET", origin, "/health", {})
    assert [await connection.exchange(request) for _ in range(3)] == [200, 200, 200]
    assert server.connections == 1
    connection.close()


async def test_a_reply_that_closes_the_connection_closes_it(serve: Serve) -> None:
    async def closing(_: bytes) -> bytes:
        return b"HTTP/1.1 503 Busy\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"

    _, origin = await serve(closing)
    connection = await Http1Connection.open(origin, None)
    assert await connection.exchange(request_bytes("GET", origin, "/", {})) == 503
    assert connection.closed
    with pytest.raises(ConnectionResetError):
        await connection.exchange(request_bytes("GET", origin, "/", {}))


async def test_a_reply_that_is_not_http_fails_the_exchange(serve: Serve) -> None:
    async def garbage(_: bytes) -> bytes:
        return b"SSH-2.0-OpenSSH\r\n\r\n"

    _, origin = await serve(garbage)
    connection = await Http1Connection.open(origin, None)
    with pytest.raises(ConnectionError, match="bad HTTP reply"):
        await connection.exchange(request_bytes("GET", origin, "/", {}))


async def test_latency_counts_from_when_a_request_fell_due(serve: Serve) -> None:
    """Requests fall due every 10 ms; the one connection takes at least 20 ms per answer, so
    request k is answered at least (k + 1) * 20 ms after the start while it fell due at
    k * 10 ms. A closed loop would report about 20 ms for every request."""

    async def slow(_: bytes) -> bytes:
        await asyncio.sleep(0.02)
        return await ok(b"")

    server, origin = await serve(slow)
    target = EnvdTarget("sandbox", origin, request_bytes("GET", origin, "/health", {}))
    recorder = Recorder()
    settings = DataPlaneSettings(rate=100, connections=1, request="health")
    load = PacedLoad([target], settings, recorder, asyncio.Event())
    await load.run(0.5)
    assert (load.due, load.dropped, load.unfinished, recorder.failed) == (50, 0, 0, 0)
    assert len(server.requests) == 50
    seconds = sorted(recorder.operations["envd health"].seconds)
    assert seconds[-1] >= 0.49 * 0.99  # request 49: answered >= 1.0 s, due at 0.49 s
    assert seconds[len(seconds) // 2] >= 0.25  # request 25: >= 0.52 - 0.25 s


async def test_refused_connections_are_counted_by_kind(serve: Serve) -> None:
    _, origin = await serve(ok)
    closed = Origin(False, "127.0.0.1", 1)  # nothing listens on port 1
    target = EnvdTarget("sandbox", closed, request_bytes("GET", origin, "/health", {}))
    recorder = Recorder()
    settings = DataPlaneSettings(rate=50, connections=2, request="health")
    load = PacedLoad([target], settings, recorder, asyncio.Event())
    await load.run(0.2)
    assert recorder.ok == 0
    assert recorder.failed == load.due == 10
    assert list(recorder.error_counts) == ["envd health: ConnectionRefusedError"]
