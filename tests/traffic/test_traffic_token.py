"""E2B's `network.allowPublicTraffic: false` through the real gateway and the real SDKs.

The SDK hands out `sbx.traffic_access_token` and `sbx.get_host(port)`; a client of a user
port must send the token as `E2B-Traffic-Access-Token`, which the code-interpreter SDK does
by itself on port 49999. envd's port keeps its own X-Access-Token rule, so the SDK's
commands work either way.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from e2b import Sandbox
from e2b_code_interpreter import Sandbox as CodeInterpreter

from support.gateway import Gateway

PORT = 8080
HEADER = "E2B-Traffic-Access-Token"


def _denied(reply: httpx.Response, sandbox_id: str, word: str) -> None:
    assert reply.status_code == 403, reply.text
    assert reply.json() == {
        "sandboxId": sandbox_id,
        "message": "Sandbox is secured with traffic access token. "
        f"Token header 'e2b-traffic-access-token' is {word}",
        "code": 403,
    }


@pytest.mark.timeout(120)
async def test_a_user_port_needs_the_traffic_token(gateway: Gateway) -> None:
    sbx = await asyncio.to_thread(
        Sandbox.create, timeout=120, network={"allow_public_traffic": False}
    )
    try:
        token = sbx.traffic_access_token
        assert token and token != sbx._envd_access_token
        host = sbx.get_host(PORT)
        assert host == f"{PORT}-{sbx.sandbox_id}.{gateway.domain}"
        await asyncio.to_thread(
            sbx.commands.run, f"python3 -m http.server {PORT} --bind 0.0.0.0", background=True
        )
        async with httpx.AsyncClient(base_url=gateway.url) as client:
            with_token = {"host": host, HEADER: token}
            for _ in range(200):  # the server starts in the sandbox; nothing to await
                reply = await client.get("/", headers=with_token)
                if reply.status_code != 502:
                    break
                await asyncio.sleep(0.05)
            assert reply.status_code == 200 and "Directory listing" in reply.text
            _denied(await client.get("/", headers={"host": host}), sbx.sandbox_id, "missing")
            wrong = {"host": host, HEADER: "0" * 64}
            _denied(await client.get("/", headers=wrong), sbx.sandbox_id, "invalid")
            envd_token = {"host": host, HEADER: sbx._envd_access_token or ""}
            _denied(await client.get("/", headers=envd_token), sbx.sandbox_id, "invalid")
            # Header routing (the SDK's shape for E2B_SANDBOX_URL) is held to the same rule.
            routed = {"e2b-sandbox-id": sbx.sandbox_id, "e2b-sandbox-port": str(PORT)}
            _denied(await client.get("/", headers=routed), sbx.sandbox_id, "missing")
            assert (await client.get("/", headers={**routed, HEADER: token})).status_code == 200
        # envd's port is the SDK's own, unaffected.
        result = await asyncio.to_thread(sbx.commands.run, "echo ok")
        assert result.stdout == "ok\n"
    finally:
        await asyncio.to_thread(sbx.kill)


@pytest.mark.timeout(120)
async def test_a_public_sandbox_has_no_token_and_open_ports(gateway: Gateway) -> None:
    sbx = await asyncio.to_thread(Sandbox.create, timeout=60)
    try:
        assert sbx.traffic_access_token is None
        info = await asyncio.to_thread(sbx.get_info)
        assert info.sandbox_id == sbx.sandbox_id
    finally:
        await asyncio.to_thread(sbx.kill)


@pytest.mark.timeout(180)
async def test_the_code_interpreter_sdk_sends_the_token_on_49999(gateway: Gateway) -> None:
    sbx = await asyncio.to_thread(
        CodeInterpreter.create, timeout=120, network={"allow_public_traffic": False}
    )
    try:
        assert sbx.traffic_access_token
        execution = await asyncio.to_thread(sbx.run_code, "1 + 1")
        assert execution.text == "2"
        async with httpx.AsyncClient(base_url=gateway.url) as client:
            reply = await client.get("/health", headers={"host": sbx.get_host(49999)})
        _denied(reply, sbx.sandbox_id, "missing")
    finally:
        await asyncio.to_thread(sbx.kill)
