"""The edge against the real lifecycle service (local backend, in-process), wired as `up`
wires them: unix sockets in a private directory, and the lifecycle caller token."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
from pathlib import Path

import grpc
import httpx
import pytest

from extproc.core.backoff import Backoff
from extproc.core.caller_token import new_token, write_token_file
from extproc.core.errors import Unavailable
from extproc.edge.server import Edge
from extproc.edge.settings import DirectorySettings, EdgeSettings
from extproc.lifecycle.processes import scan_supervisors
from extproc.lifecycle.server import serving
from extproc.lifecycle.settings import LifecycleSettings, LocalSettings, ServerSettings
from support import rootfs

from .conftest import DOMAIN, check_request, copy_identity, write_keys
from .test_platform import call

pytestmark = pytest.mark.slow


def _wired(tmp_path: Path, **local: object) -> tuple[Path, LifecycleSettings, str]:
    """The state directory, the lifecycle settings on `<state>/run/lifecycle.sock`, a token."""
    state = tmp_path / "state"
    (state / "run").mkdir(parents=True, mode=0o700)
    token = new_token()
    write_token_file(state / "run" / "lifecycle-token", token)
    settings = LifecycleSettings(
        server=ServerSettings(listen=f"unix:{state / 'run' / 'lifecycle.sock'}", grace_s=1.0),
        local=LocalSettings(
            state_dir=state / "lifecycle",
            pool_size=0,
            kill_on_exit=True,
            jwt_public_key=state / "identity" / "public.pem",
            rootfs_cache_dir=rootfs.CACHE_DIR,
            **local,  # type: ignore[arg-type]
        ),
    )
    return state, settings, token


def _edge_settings(state: Path, token_file: Path) -> EdgeSettings:
    return EdgeSettings.for_state_dir(
        state,
        listen=f"unix:{state / 'run' / 'edge.sock'}",
        metrics_listen=f"unix:{state / 'run' / 'metrics.sock'}",
        domain=DOMAIN,
        directory=DirectorySettings(
            lifecycle_target=f"unix:{state / 'run' / 'lifecycle.sock'}",
            lifecycle_token_file=token_file,
            backoff=Backoff(initial_s=0.01, max_s=5.0),
        ),
    )


async def test_the_edge_calls_lifecycle_with_its_token_and_scope(
    tmp_path: Path, identity_dir: Path
) -> None:
    """No sandbox needed: WatchSandboxes and a GetSandbox miss (every tenant, so scoped) and a
    platform call all pass the caller token; a wrong token keeps the directory from syncing."""
    state, settings, token = _wired(tmp_path, interpreter_pool_size=0, isolation="none")
    write_keys(state)
    copy_identity(identity_dir, state)
    async with serving(settings, caller_token=token):
        edge = Edge(_edge_settings(state, state / "run" / "lifecycle-token"))
        await edge.start()
        try:
            await asyncio.wait_for(edge.feed.synced.wait(), 10)
            assert await edge.feed.fetch("a" * 20) is None  # NOT_FOUND, not refused
            for name in ("edge.sock", "metrics.sock", "lifecycle.sock"):
                assert (state / "run" / name).stat().st_mode & 0o777 == 0o600
            async with grpc.aio.insecure_channel(f"unix:{state / 'run' / 'edge.sock'}") as channel:
                listed = await call(channel, "GET", "/v2/sandboxes")
                assert listed.status == 200, listed.raw
            transport = httpx.AsyncHTTPTransport(uds=str(state / "run" / "metrics.sock"))
            async with httpx.AsyncClient(transport=transport, base_url="http://edge") as client:
                metrics = await client.get("/metrics")
            assert "agentcube_e2b_edge_platform_requests" in metrics.text
        finally:
            await edge.stop(0)
        wrong = tmp_path / "wrong-token"
        write_token_file(wrong, new_token())
        outsider = Edge(
            dataclasses.replace(
                _edge_settings(state, wrong), listen="127.0.0.1:0", metrics_listen=""
            )
        )
        await outsider.start()
        try:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(outsider.feed.synced.wait(), 0.5)
            with pytest.raises(Unavailable):
                await outsider.feed.fetch("b" * 20)
        finally:
            await outsider.stop(0)


async def test_create_route_kill_through_the_edge(tmp_path: Path, identity_dir: Path) -> None:
    state, lifecycle_settings, token = _wired(tmp_path)
    write_keys(state)
    copy_identity(identity_dir, state)
    async with serving(lifecycle_settings, caller_token=token):
        edge = Edge(_edge_settings(state, state / "run" / "lifecycle-token"))
        await edge.start()
        try:
            await edge.feed.synced.wait()
            async with grpc.aio.insecure_channel(f"unix:{state / 'run' / 'edge.sock'}") as channel:
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
