"""`envoy-config --fragment` merged into a platform team's own Envoy, validated and run.

The team's bootstrap (platform_team/bootstrap.yaml) has its own listener, virtual hosts, a
catch-all, filters, a local-reply page and clusters. After the merge its traffic must behave
exactly as before (no ext_authz call, no header stripped, its own error page), and E2B traffic
must go through the gateway's filters to the edge and the sandbox.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
import uvicorn
import yaml
from envoy_harness import free_port
from envoy_standins import DOMAIN, GOOD_KEY, SANDBOX_ID, TENANT, Edge, start_edge, upstream_app

from extproc.envoy_config.settings import HostPort, UnixSocket
from extproc.up import admin_client
from support.fragment_merging import merged_bootstrap
from support.gateway import envoy_argv, wait_envoy_ready

pytestmark = pytest.mark.asyncio(loop_scope="module")

SHOP = "shop.example.com"


async def shop_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The team's own backend: who served the request, and the headers that reached it."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    headers = {key.decode(): value.decode() for key, value in scope["headers"]}
    body = json.dumps({"served_by": "shop", "headers": headers}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


class MergedEnvoy:
    def __init__(self, url: str, edge: Edge, admin: UnixSocket) -> None:
        self.url = url
        self.edge = edge
        self.admin = admin

    async def counter(self, name: str) -> int:
        async with admin_client(self.admin) as client:
            stats = (await client.get("/stats", params={"filter": f"^{name}$"})).text
        return int(stats.split(":")[1])


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def merged(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[MergedEnvoy]:
    directory = tmp_path_factory.mktemp("merged")
    servers = []
    ports = {}
    for name, app in (("sandbox", upstream_app), ("shop_web", shop_app)):
        ports[name] = free_port()
        servers.append(
            uvicorn.Server(
                uvicorn.Config(app, host="127.0.0.1", port=ports[name], log_level="warning")
            )
        )
    serving = [asyncio.create_task(server.serve(), name="upstream") for server in servers]
    edge = Edge(envd_port=ports["sandbox"])
    grpc_server, edge_port = await start_edge(edge)
    config = directory / "envoy.yaml"
    admin = directory / "admin.sock"
    listen = free_port()
    document = merged_bootstrap(
        HostPort("127.0.0.1", edge_port),
        domain=DOMAIN,
        listen=listen,
        admin=admin,
        shop_web=ports["shop_web"],
        shop_api=free_port(),  # nothing listens: the shop's API is down
    )
    config.write_text(yaml.safe_dump(document, sort_keys=False))
    with (directory / "envoy.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            *envoy_argv(config, concurrency=1, log_level="warning"),
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            await wait_envoy_ready(UnixSocket(admin), process)
            yield MergedEnvoy(f"http://127.0.0.1:{listen}", edge, UnixSocket(admin))
        finally:
            if process.returncode is None:
                process.terminate()
            await process.wait()
            await grpc_server.stop(None)
            for server in servers:
                server.should_exit = True
            await asyncio.gather(*serving)


async def test_team_routes_never_reach_the_edge_and_keep_their_headers(
    merged: MergedEnvoy,
) -> None:
    checks = len(merged.edge.checks)
    team_headers = {"x-agentcube-tenant": "shop", "x-api-key": "shop-key"}
    async with httpx.AsyncClient(base_url=merged.url) as client:
        shop = await client.get("/", headers={"host": SHOP, **team_headers})
        # E2B's routing headers on the team's catch-all host mean nothing there
        catch_all = await client.get(
            "/", headers={"host": "intranet.example.org", "e2b-sandbox-id": SANDBOX_ID}
        )
        health = await client.get("/healthz", headers={"host": "intranet.example.org"})
    assert shop.status_code == 200
    assert shop.json()["served_by"] == "shop"
    for name, value in team_headers.items():
        assert shop.json()["headers"][name] == value
    assert catch_all.status_code == 200
    assert catch_all.json()["served_by"] == "shop"
    assert (health.status_code, health.text) == (200, "ok")
    assert len(merged.edge.checks) == checks


async def test_team_filter_turned_off_on_gateway_hosts_only(merged: MergedEnvoy) -> None:
    counter = "shop_ratelimit.http_local_rate_limit.enabled"
    before = await merged.counter(counter)
    async with httpx.AsyncClient(base_url=merged.url) as client:
        e2b = await client.get("/echo", headers={"host": f"49983-{SANDBOX_ID}.{DOMAIN}"})
        assert e2b.status_code == 200
        assert await merged.counter(counter) == before
        shop = await client.get("/", headers={"host": SHOP})
        assert shop.status_code == 200
    assert await merged.counter(counter) == before + 1


async def test_team_local_reply_stays_theirs(merged: MergedEnvoy) -> None:
    async with httpx.AsyncClient(base_url=merged.url) as client:
        response = await client.get("/api/orders", headers={"host": SHOP})
    assert response.status_code == 503
    assert response.text == "shop is unavailable, try again later\n"


async def test_sandbox_traffic_goes_through_ext_authz(merged: MergedEnvoy) -> None:
    async with httpx.AsyncClient(base_url=merged.url) as client:
        response = await client.get(
            "/echo",
            headers={
                "host": f"49983-{SANDBOX_ID}.{DOMAIN}",
                "authorization": "Bearer evil",
                "x-agentcube-e2b-user": "root",
                "x-agentcube-tenant": "team-b",
            },
        )
    assert response.status_code == 200
    seen = response.json()
    assert seen["authorization"] == "Bearer standin-jwt"
    assert "x-agentcube-e2b-user" not in seen
    assert "x-agentcube-tenant" not in seen
    assert merged.edge.checks[-1].attributes.context_extensions["surface"] == "sandbox"


async def test_header_routing_on_the_shared_sandbox_host(merged: MergedEnvoy) -> None:
    async with httpx.AsyncClient(base_url=merged.url) as client:
        response = await client.get(
            "/echo",
            headers={
                "host": f"sandbox.{DOMAIN}",
                "e2b-sandbox-id": SANDBOX_ID,
                "e2b-sandbox-port": "49983",
            },
        )
    assert response.status_code == 200
    assert response.json()["authorization"] == "Bearer standin-jwt"


async def test_platform_api_through_ext_authz_and_ext_proc(merged: MergedEnvoy) -> None:
    host = f"api.{DOMAIN}"
    async with httpx.AsyncClient(base_url=merged.url) as client:
        created = await client.post(
            "/v2/sandboxes",
            headers={"host": host, "x-api-key": GOOD_KEY, "x-agentcube-tenant": "evil"},
            json={"templateID": "base"},
        )
        bad_key = await client.get("/sandboxes", headers={"host": host, "x-api-key": "e2b_bad"})
    assert created.status_code == 201
    assert created.json()["tenant"] == TENANT
    assert created.json()["spoofed"] == []
    assert merged.edge.checks[-1].attributes.context_extensions["surface"] == "platform"
    assert bad_key.status_code == 401
    assert bad_key.json() == {"code": 401, "message": "Invalid API key"}


async def test_e2b_local_replies_on_e2b_hosts_only(merged: MergedEnvoy) -> None:
    closed = free_port()
    async with httpx.AsyncClient(base_url=merged.url) as client:
        # the host as a client on a non-default port sends it
        response = await client.get(
            "/", headers={"host": f"{closed}-{SANDBOX_ID}.{DOMAIN.upper()}:443"}
        )
    assert response.status_code == 502
    assert response.json() == {
        "sandboxId": SANDBOX_ID,
        "message": "The sandbox is running but port is not open",
        "port": closed,
        "code": 502,
    }
