"""One pass through the edge against the real lifecycle service (local backend, in-process)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import grpc
import pytest

from extproc.edge.server import Edge
from extproc.edge.settings import DirectorySettings, EdgeSettings
from extproc.lifecycle.processes import scan_supervisors
from extproc.lifecycle.server import serving
from extproc.lifecycle.settings import LifecycleSettings, LocalSettings, ServerSettings

from .conftest import DOMAIN, check_request, copy_identity, write_keys
from .test_platform import call

pytestmark = pytest.mark.slow


async def test_create_route_kill_through_the_edge(tmp_path: Path, identity_dir: Path) -> None:
    state = tmp_path / "state"
    write_keys(state)
    copy_identity(identity_dir, state)
    lifecycle_settings = LifecycleSettings(
        server=ServerSettings(listen="127.0.0.1:0", grace_s=1.0),
        local=LocalSettings(
            state_dir=state / "lifecycle",
            pool_size=0,
            kill_on_exit=True,
            jwt_public_key=state / "identity" / "public.pem",
        ),
    )
    async with serving(lifecycle_settings) as running:
        edge = Edge(
            EdgeSettings.for_state_dir(
                state,
                listen="127.0.0.1:0",
                metrics_listen="",
                domain=DOMAIN,
                directory=DirectorySettings(lifecycle_target=f"127.0.0.1:{running.port}"),
            )
        )
        await edge.start()
        try:
            await edge.feed.synced.wait()
            async with grpc.aio.insecure_channel(f"127.0.0.1:{edge.port}") as channel:
                created = await call(channel, "POST", "/v2/sandboxes", {"templateID": "base"})
                assert created.status == 201, created.raw
                body = created.json()
                sandbox_id, token = body["sandboxID"], body["envdAccessToken"]
                host = f"49983-{sandbox_id}.{DOMAIN}"
                allowed = await edge.authz.Check(
                    check_request("sandbox", host, "/health", "GET", {"x-access-token": token}),
                    None,
                )
                assert allowed.status.code == 0
                upstream = allowed.dynamic_metadata.fields["upstream_host"].string_value
                assert upstream.endswith(":49983")
                denied = await edge.authz.Check(
                    check_request("sandbox", host, "/process.Process/List", "POST"), None
                )
                assert denied.denied_response.status.code == 401
                detail = await call(channel, "GET", f"/sandboxes/{sandbox_id}")
                assert detail.status == 200 and detail.json()["state"] == "running"
                other = await call(channel, "GET", f"/sandboxes/{sandbox_id}", tenant="team-b")
                assert other.status == 404
                assert (await call(channel, "DELETE", f"/sandboxes/{sandbox_id}")).status == 204
                gone = await edge.authz.Check(check_request("sandbox", host, "/health"), None)
                while gone.status.code == 0:  # the KILLED event may still be in flight
                    await asyncio.sleep(0)
                    gone = await edge.authz.Check(check_request("sandbox", host, "/health"), None)
                assert gone.denied_response.status.code == 502
        finally:
            await edge.stop(0)
    strays = scan_supervisors(f"agentcube-sandbox:{(state / 'lifecycle').resolve()}:")
    for pid in strays:
        os.killpg(pid, signal.SIGKILL)
    assert not strays
