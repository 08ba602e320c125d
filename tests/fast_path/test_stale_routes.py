"""What Envoy serves while it cannot hear from the edge, and what a restarted edge fixes.

Envoy keeps the last routes it applied when its xDS stream to the edge drops. A sandbox killed
meanwhile keeps its fast route, and its address may go to a new sandbox. The route then
carries the old sandbox's JWT and token to the new sandbox's picod (the real one here), which
refuses both: a stale route reaches no other sandbox. A restarted edge sends its full state,
which takes the stale route away.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx
import pytest

from edge.fake_lifecycle import make_sandbox
from extproc.core.identity import load_or_create_router_identity
from extproc.edge.server import Edge
from support.processes import environ_without, spawn_logged, wait_healthy

from .harness import (
    address,
    edge_settings,
    envoy_settings,
    running_envoy,
    running_lifecycle,
    write_state,
)

OLD, NEW = "sbxold", "sbxnew"
HOST = address(20)
TOKENS = {OLD: "token-of-the-old-one", NEW: "token-of-the-new-one"}


async def _until_serving(edge: Edge, sandbox_id: str) -> None:
    for _ in range(1000):
        if edge.xds is not None and edge.xds.serving(sandbox_id):
            return
        await asyncio.sleep(0.01)  # state of this process's event loop
    raise TimeoutError(f"{sandbox_id} never got a fast route")


def _headers(sandbox_id: str) -> dict[str, str]:
    return {
        "e2b-sandbox-id": sandbox_id,
        "e2b-sandbox-port": "49983",
        "x-access-token": TOKENS[sandbox_id],
    }


@pytest.mark.timeout(90)
async def test_a_stale_fast_route_reaches_no_other_sandbox(tmp_path: Path) -> None:
    identity = tmp_path / "identity"
    public_pem = load_or_create_router_identity(identity).public_pem
    state = tmp_path / "gw"
    write_state(state, identity)
    envoy = envoy_settings(state, fast=True)
    old = make_sandbox(OLD, "default", endpoint_host=HOST, envd_access_token=TOKENS[OLD])
    async with running_lifecycle([old]) as (_, target):
        edge = Edge(edge_settings(state, target, fast=True))
        await edge.start()
        async with (
            running_envoy(envoy, state),
            httpx.AsyncClient(base_url=f"http://{envoy.listen}", timeout=10) as client,
        ):
            await _until_serving(edge, OLD)
            # the edge goes away; Envoy keeps the routes it has
            await edge.stop(0)
            # the old sandbox is gone and a new one has its address
            key = tmp_path / "router.pub"
            key.write_bytes(public_pem)
            argv = [sys.executable, "-m", "extproc.cli", "picod", "--listen", f"{HOST}:49983",
                    "--sandbox-id", NEW, "--jwt-public-key", str(key),
                    "--access-token", TOKENS[NEW], "--home", str(tmp_path / "home")]  # fmt: skip
            picod = spawn_logged(argv, tmp_path / "picod.log", environ_without("AGENTCUBE_E2B_"))
            try:
                wait_healthy(
                    picod, f"http://{HOST}:49983/health", 204, timeout_s=30, interval_s=0.02
                )
                stale = await client.get("/envs", headers=_headers(OLD))
                # picod's refusal (Envoy without an edge would answer 503): the stale route
                # was taken, and the new sandbox turned the old one's credentials away
                assert stale.status_code == 401, stale.text
                assert "token" in stale.json()["message"] or "JWT" in stale.json()["message"]
                # a restarted edge knows only the new sandbox
                new = make_sandbox(
                    NEW, "default", endpoint_host=HOST, envd_access_token=TOKENS[NEW]
                )
                async with running_lifecycle([new]) as (_, new_target):
                    (state / "edge.sock").unlink(missing_ok=True)
                    restarted = Edge(edge_settings(state, new_target, fast=True))
                    await restarted.start()
                    try:
                        await _until_serving(restarted, NEW)
                        gone = await client.get("/envs", headers=_headers(OLD))
                        assert gone.status_code == 502, gone.text
                        assert gone.json()["message"] == "The sandbox was not found"
                        ok = await client.get("/envs", headers=_headers(NEW))
                        assert ok.status_code == 200, ok.text
                    finally:
                        await restarted.stop(0)
            finally:
                picod.terminate()
                picod.wait(timeout=10)
