"""Sandbox traffic beyond envd: a user's websocket server, and a closed port."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
import websockets
from e2b import Sandbox

from support.gateway import Gateway
from support.processes import free_port

SERVER = Path(__file__).with_name("ws_echo_server.py")


@pytest.mark.timeout(60)
async def test_websocket_to_a_user_server_in_the_sandbox(gateway: Gateway) -> None:
    sbx = await asyncio.to_thread(Sandbox.create, timeout=120)
    try:
        port = free_port()
        host = f"{port}-{sbx.sandbox_id}.{gateway.domain}"
        async with httpx.AsyncClient(base_url=gateway.url) as client:
            await asyncio.to_thread(sbx.files.write, "ws_echo_server.py", SERVER.read_text())
            await asyncio.to_thread(
                sbx.commands.run, f"python3 ws_echo_server.py {port}", background=True
            )
            for _ in range(200):  # the server starts in the sandbox; nothing to await
                if (await client.get("/", headers={"host": host})).status_code != 502:
                    break
                await asyncio.sleep(0.05)
        listen = gateway.url.removeprefix("http://")
        envoy_host, envoy_port = listen.rsplit(":", 1)
        async with websockets.connect(
            f"ws://{host}/", host=envoy_host, port=int(envoy_port)
        ) as socket:
            for text in ("one", "two"):
                await socket.send(text)
                assert await socket.recv() == f"echo:{text}"
    finally:
        await asyncio.to_thread(sbx.kill)


async def test_closed_port_is_e2b_502_port_not_open(gateway: Gateway) -> None:
    """Needs the edge to put the target `port` (a number) in its dynamic metadata."""
    sbx = await asyncio.to_thread(Sandbox.create, timeout=60)
    try:
        port = free_port()
        async with httpx.AsyncClient(base_url=gateway.url) as client:
            closed = await client.get(
                "/", headers={"host": f"{port}-{sbx.sandbox_id}.{gateway.domain}"}
            )
        assert closed.status_code == 502
        assert closed.json() == {
            "sandboxId": sbx.sandbox_id,
            "message": "The sandbox is running but port is not open",
            "port": port,
            "code": 502,
        }
    finally:
        await asyncio.to_thread(sbx.kill)
