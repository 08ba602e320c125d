"""The generated config on the real Envoy, against stand-ins for the edge and a sandbox.

These pin down what Envoy itself must do (routing, stripping, fail-closed, local replies,
streaming, websockets); tests/e2e repeats the important ones with the real edge and picod.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import h11
import httpx
import pytest
import pytest_asyncio
import uvicorn
import websockets
from envoy_harness import free_port, running_envoy, tcp_edges
from envoy_standins import DOMAIN, GOOD_KEY, SANDBOX_ID, TENANT, Edge, start_edge, upstream_app

from extproc.envoy_config.settings import EnvoySettings, HostPort, UnixSocket
from extproc.up import admin_client

pytestmark = pytest.mark.asyncio(loop_scope="module")


class Gateway:
    def __init__(self, settings: EnvoySettings, edge: Edge, log: Path) -> None:
        self.settings = settings
        self.edge = edge
        self.log = log
        self.url = f"http://{settings.listen}"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    directory = tmp_path_factory.mktemp("envoy")
    upstream_port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(upstream_app, host="127.0.0.1", port=upstream_port, log_level="warning")
    )
    serving = asyncio.create_task(server.serve(), name="standin-upstream")
    edge = Edge(envd_port=upstream_port)
    edge_socket = UnixSocket(directory / "edge.sock")  # as `up` runs it
    grpc_server, _ = await start_edge(edge, str(edge_socket))
    try:
        async with running_envoy([edge_socket], directory) as settings:
            yield Gateway(settings, edge, directory / "access.log")
    finally:
        await grpc_server.stop(None)
        server.should_exit = True
        await serving


def sandbox_host(port: int = 49983, sandbox_id: str = SANDBOX_ID) -> str:
    return f"{port}-{sandbox_id}.{DOMAIN}"


async def test_host_routing_replaces_credentials_and_strips_spoofed_headers(
    gateway: Gateway,
) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        response = await client.get(
            "/echo",
            headers={
                "host": sandbox_host(),
                "authorization": "Bearer evil",
                "x-api-key": GOOD_KEY,
                "x-envoy-original-dst-host": "127.0.0.1:1",
                "x-agentcube-e2b-user": "root",
                "x-agentcube-tenant": "team-b",
            },
        )
    assert response.status_code == 200
    seen = response.json()
    assert seen["authorization"] == "Bearer standin-jwt"
    for header in (
        "x-api-key",
        "x-envoy-original-dst-host",
        "x-agentcube-e2b-user",
        "x-agentcube-tenant",
    ):
        assert header not in seen
    check = gateway.edge.checks[-1]
    assert check.attributes.context_extensions["surface"] == "sandbox"
    # only the contract's allowlist reaches the edge
    assert set(check.attributes.request.http.headers) <= {
        ":authority",
        ":method",
        ":path",
        "x-api-key",
        "authorization",
        "accept",
        "user-agent",
        "x-request-id",
    }


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", f"sandbox.{DOMAIN}"])
async def test_shared_hosts_route_by_header(gateway: Gateway, host: str) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        response = await client.get(
            "/echo",
            headers={"host": host, "e2b-sandbox-id": SANDBOX_ID, "e2b-sandbox-port": "49983"},
        )
    assert response.status_code == 200
    assert response.json()["authorization"] == "Bearer standin-jwt"


@pytest.mark.parametrize("host", ["localhost", f"api.{DOMAIN}", "127.0.0.1:8081"])
async def test_platform_answered_by_ext_proc_with_tenant_from_authz(
    gateway: Gateway, host: str
) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        response = await client.get(
            "/sandboxes",
            headers={"host": host, "x-api-key": GOOD_KEY, "x-agentcube-tenant": "evil"},
        )
        posted = await client.post(
            "/v2/sandboxes",
            headers={"host": host, "x-api-key": GOOD_KEY},
            json={"templateID": "base"},
        )
    assert response.status_code == 201
    assert response.json() == {"tenant": TENANT, "path": "/sandboxes", "spoofed": []}
    assert posted.status_code == 201
    assert posted.json()["body_bytes"] == len(b'{"templateID":"base"}')
    assert gateway.edge.checks[-1].attributes.context_extensions["surface"] == "platform"


async def test_edge_denial_passes_through_untouched(gateway: Gateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        bad_key = await client.get("/sandboxes", headers={"x-api-key": "e2b_bad"})
        unknown = await client.get("/health", headers={"host": sandbox_host(sandbox_id="nosuch")})
    assert bad_key.status_code == 401
    assert bad_key.json() == {"code": 401, "message": "Invalid API key"}
    assert unknown.status_code == 502
    assert "was not found" in unknown.json()["message"]


async def test_closed_sandbox_port_is_e2b_502(gateway: Gateway) -> None:
    closed = free_port()
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        response = await client.get("/", headers={"host": sandbox_host(closed)})
    assert response.status_code == 502
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {
        "sandboxId": SANDBOX_ID,
        "message": "The sandbox is running but port is not open",
        "port": closed,
        "code": 502,
    }


async def test_chunks_stream_through_incrementally(gateway: Gateway) -> None:
    arrivals: list[float] = []
    async with (
        httpx.AsyncClient(base_url=gateway.url) as client,
        client.stream("GET", "/stream", headers={"host": sandbox_host()}) as response,
    ):
        async for _ in response.aiter_lines():
            arrivals.append(time.monotonic())
    assert len(arrivals) == 4
    # not buffered: the last chunk came well after the first
    assert arrivals[-1] - arrivals[0] > 0.6


async def test_websocket_through_envoy(gateway: Gateway) -> None:
    listen = gateway.settings.listen
    # the URI names the sandbox host; the TCP connection goes to Envoy
    async with websockets.connect(
        f"ws://{sandbox_host()}/ws", host=listen.host, port=listen.port
    ) as socket:
        await socket.send("hi")
        assert await socket.recv() == "echo:hi"


async def test_h2c_client_reaches_http1_sandbox(gateway: Gateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, http1=False, http2=True) as client:
        response = await client.get("/echo", headers={"host": sandbox_host()})
    assert response.http_version == "HTTP/2"
    assert response.status_code == 200


async def test_access_log_is_json_with_authz_fields_and_no_secrets(gateway: Gateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        await client.get(
            "/echo",
            headers={
                "host": sandbox_host(),
                "x-api-key": GOOD_KEY,
                "authorization": "Bearer secret-token",
            },
        )
    async with admin_client(gateway.settings.admin) as admin:  # logs are flushed on a timer
        await admin.post("/reopen_logs")
    text = ""
    for _ in range(100):
        text = gateway.log.read_text()
        if '"/echo"' in text:
            break
        await asyncio.sleep(0.05)
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    line = next(entry for entry in reversed(lines) if entry["path"] == "/echo")
    assert line["sandbox_id"] == SANDBOX_ID and line["tenant"] == TENANT
    assert line["status"] == 200 and line["upstream_host"].startswith("127.0.0.1:")
    assert int(line["authz_us"]) > 0
    assert GOOD_KEY not in text and "secret-token" not in text


async def test_edge_down_fails_closed_with_json_503(tmp_path: Path) -> None:
    async with (
        running_envoy(tcp_edges([free_port()]), tmp_path) as settings,
        httpx.AsyncClient() as client,
    ):
        for host in (sandbox_host(), f"api.{DOMAIN}"):
            response = await client.get(f"http://{settings.listen}/health", headers={"host": host})
            assert response.status_code == 503
            assert response.json()["code"] == 503


async def _raw_get(listen: HostPort, target: str, host: str) -> tuple[int, bytes]:
    """GET `target` spelt exactly so on the wire (HTTP clients normalise `/./`)."""
    connection = h11.Connection(h11.CLIENT)
    reader, writer = await asyncio.open_connection(listen.host, listen.port)
    request = h11.Request(method="GET", target=target, headers=[("host", host)])
    writer.write(connection.send(request) + connection.send(h11.EndOfMessage()))
    status, body = 0, b""
    try:
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return status, body
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.parametrize("spelling", ["/%69nit", "//init", "/./init", "/%2Finit", "/x/../init"])
async def test_every_spelling_of_a_path_reaches_edge_and_sandbox_as_one(
    gateway: Gateway, spelling: str
) -> None:
    status, body = await _raw_get(gateway.settings.listen, spelling, sandbox_host())
    assert status == 200, body
    assert json.loads(body)[":path"] == "/init"
    assert gateway.edge.checks[-1].attributes.request.http.path == "/init"


async def _http_answering(body: bytes, port: int) -> asyncio.Server:
    """A TCP server on 127.0.0.1:`port` of this network namespace answering `body`."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        writer.write(head.encode() + body)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", port)


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None,
    reason="creating a network namespace needs root and iproute2",
)
async def test_sandbox_connections_are_opened_inside_sandbox_netns(tmp_path: Path) -> None:
    """The same 127.0.0.1:PORT answers differently on the host and in a namespace; with
    `sandbox_netns` Envoy reaches the namespace's, and the edge's pipe is still the host's."""
    name = f"agentcube-e2b-test-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    port = free_port()
    host_server = await _http_answering(b"host", port)
    inside: asyncio.subprocess.Process | None = None
    edge_server = None
    try:
        subprocess.run(
            ["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True, timeout=10
        )
        (tmp_path / "www").mkdir()
        (tmp_path / "www" / "where").write_text("namespace")
        inside = await asyncio.create_subprocess_exec(
            *("ip", "netns", "exec", name, sys.executable, "-m", "http.server"),
            *("--bind", "127.0.0.1", "--directory", str(tmp_path / "www"), str(port)),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        edge_socket = UnixSocket(tmp_path / "edge.sock")
        edge_server, _ = await start_edge(Edge(envd_port=port), str(edge_socket))
        async with (
            running_envoy([edge_socket], tmp_path, Path("/run/netns") / name) as settings,
            httpx.AsyncClient(base_url=f"http://{settings.listen}") as client,
        ):
            body = ""
            for _ in range(200):  # until http.server inside the namespace listens
                response = await client.get("/where", headers={"host": sandbox_host()})
                body = response.text
                if response.status_code == 200:
                    break
                await asyncio.sleep(0.05)
            assert body == "namespace"
    finally:
        if edge_server is not None:
            await edge_server.stop(None)
        if inside is not None:
            inside.terminate()
            await inside.wait()
        host_server.close()
        await host_server.wait_closed()
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=10)
