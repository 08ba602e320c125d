"""`up`'s fast path with the real SDK: once a sandbox's route has landed, its envd traffic is
served by Envoy alone (no Check), and a kill still cuts it at once."""

from __future__ import annotations

import asyncio
import time

import pytest
from e2b import Sandbox
from e2b.exceptions import SandboxException

from support.gateway import Gateway, envoy_admin

CHECKS = "http.e2b.ext_authz.ok"


def _checks(gateway: Gateway) -> int:
    with envoy_admin(gateway.state_dir) as admin:
        text = admin.get("/stats", params={"filter": f"^{CHECKS}$"}).text
    return int(text.split(":")[1]) if text.strip() else 0


def _served_alone(gateway: Gateway, sbx: Sandbox) -> bool:
    before = _checks(gateway)
    sbx.commands.run("true")
    return _checks(gateway) == before


@pytest.mark.timeout(120)
async def test_a_running_sandbox_is_served_without_checks(gateway: Gateway) -> None:
    sbx = await asyncio.to_thread(Sandbox.create, timeout=120)
    try:
        deadline = time.monotonic() + 10
        while not await asyncio.to_thread(_served_alone, gateway, sbx):
            assert time.monotonic() < deadline, "the sandbox's fast route never landed"
            await asyncio.sleep(0.05)  # the push lands in Envoy, out of this process
        before = _checks(gateway)

        def steady_traffic() -> None:
            for _ in range(10):
                assert sbx.commands.run("echo hi").stdout == "hi\n"
            sbx.files.write("/tmp/fast.txt", "fast")
            assert sbx.files.read("/tmp/fast.txt") == "fast"
            assert sbx.commands.run("whoami", user="root").stdout == "root\n"
            assert sbx.commands.run("whoami", user="user").stdout == "user\n"
            assert [entry.name for entry in sbx.files.list("/tmp") if entry.name == "fast.txt"]

        await asyncio.to_thread(steady_traffic)
        assert _checks(gateway) == before
    finally:
        await asyncio.to_thread(sbx.kill)
    # the kill answered once Envoy had switched the route off: the next call is the Check's
    with pytest.raises(SandboxException):
        await asyncio.to_thread(sbx.commands.run, "true")
    assert _checks(gateway) > before
