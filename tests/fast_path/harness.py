"""Two gateways side by side, the real edge and the real Envoy, one with the fast path and one
without, each over its own in-memory lifecycle holding the same sandboxes; echo servers stand
in for the sandboxes' picods, each on its own loopback address and envd's port.

The echo answers with who it is and every header that reached it, so a test can compare
what the sandbox saw through either gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import shutil
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from edge.fake_lifecycle import FakeLifecycle, start_fake
from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc.core.api_keys import KeyStatus, hash_api_key
from extproc.core.backoff import Backoff
from extproc.edge.server import Edge
from extproc.edge.settings import DirectorySettings, EdgeSettings, FastPathSettings
from extproc.envoy_config.bootstrap import render_yaml
from extproc.envoy_config.routes import route_configuration
from extproc.envoy_config.settings import EnvoySettings, HostPort, UnixSocket
from extproc.up import admin_client
from support.gateway import envoy_argv, wait_envoy_ready
from support.processes import free_port

DOMAIN = "e2b.test"
API_KEY = "e2b_" + "f" * 40
# One /24 of loopback per run, so sandboxes' addresses (all on envd's port) are free.
SUBNET = f"127.{random.randrange(64, 250)}.{random.randrange(1, 250)}"


def address(index: int) -> str:
    return f"{SUBNET}.{index}"


async def _echo(label: str, scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    while (await receive()).get("more_body"):
        pass
    body = {
        "sandbox": label,
        "path": scope["raw_path"].decode(),
        "headers": [[key.decode(), value.decode()] for key, value in scope["headers"]],
    }
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})


@contextlib.asynccontextmanager
async def echo_servers(labels: dict[str, str]) -> AsyncIterator[None]:
    """An echo on `<ip>:49983` for each ip -> label."""
    servers = []
    for ip, label in labels.items():

        async def app(scope: Any, receive: Any, send: Any, label: str = label) -> None:
            await _echo(label, scope, receive, send)

        config = uvicorn.Config(app, host=ip, port=49983, log_level="warning", lifespan="off")
        servers.append(uvicorn.Server(config))
    tasks = [asyncio.create_task(server.serve(), name="echo") for server in servers]
    try:
        while not all(server.started for server in servers):
            for task in tasks:
                if task.done():
                    task.result()
            await asyncio.sleep(0.01)  # uvicorn has no start event to await
        yield
    finally:
        for server in servers:
            server.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)


async def envoy_stats(admin: UnixSocket, *names: str) -> dict[str, int]:
    """Envoy's counters by full name (0 when Envoy has not created one yet)."""
    async with admin_client(admin) as client:
        text = (await client.get("/stats", params={"format": "json"})).json()
    values = {entry["name"]: entry.get("value", 0) for entry in text["stats"] if "name" in entry}
    return {name: int(values.get(name, 0)) for name in names}


def write_state(state: Path, identity: Path) -> None:
    keys = state / "keys"
    keys.mkdir(parents=True)
    statuses = {hash_api_key(API_KEY): KeyStatus.VALID.value}
    (keys / "e2b-api-keys.json").write_text(
        json.dumps({"apiVersion": "v1", "kind": "Secret", "stringData": statuses})
    )
    (keys / "e2b-api-key-config.json").write_text(
        json.dumps(
            {"apiVersion": "v1", "kind": "ConfigMap", "data": {"defaultNamespace": "default"}}
        )
    )
    shutil.copytree(identity, state / "identity")


@dataclass
class Gateway:
    fast: bool
    url: str
    admin: UnixSocket
    edge: Edge
    lifecycle: FakeLifecycle
    access_log: Path

    async def stats(self, *names: str) -> dict[str, int]:
        """Envoy's counters by full name (0 when Envoy has not created one yet)."""
        async with admin_client(self.admin) as client:
            text = (await client.get("/stats", params={"format": "json"})).json()
        values = {
            entry["name"]: entry.get("value", 0) for entry in text["stats"] if "name" in entry
        }
        return {name: int(values.get(name, 0)) for name in names}

    async def publish(self, event_type: int, sandbox: pb.Sandbox) -> None:
        """A lifecycle change, as the watch stream sends it."""
        self.lifecycle.sandboxes[sandbox.sandbox_id] = sandbox
        if event_type in (pb.SANDBOX_EVENT_TYPE_KILLED, pb.SANDBOX_EVENT_TYPE_EXPIRED):
            self.lifecycle.sandboxes.pop(sandbox.sandbox_id, None)
        await self.lifecycle.publish(event_type, sandbox)


def envoy_settings(state: Path, *, fast: bool) -> EnvoySettings:
    """Envoy's settings for a gateway in `state`; with `fast`, also the routes file the edge
    serves (`routes_file(state)`), as `up` writes it."""
    envoy = EnvoySettings(
        listen=HostPort("127.0.0.1", free_port()),
        admin=UnixSocket(state / "admin.sock"),
        domain=DOMAIN,
        edges=(UnixSocket(state / "edge.sock"),),
        fast_path=fast,
    )
    if fast:
        routes_file(state).write_bytes(bytes(route_configuration(envoy)))
    return envoy


def routes_file(state: Path) -> Path:
    return state / "routes.pb"


def edge_settings(state: Path, lifecycle: str, *, fast: bool) -> EdgeSettings:
    return EdgeSettings.for_state_dir(
        state,
        listen=f"unix:{state / 'edge.sock'}",
        metrics_listen="",
        domain=DOMAIN,
        directory=DirectorySettings(
            lifecycle_target=lifecycle, backoff=Backoff(initial_s=0.01, max_s=5.0)
        ),
        shutdown_grace_s=0.5,
        fast_path=FastPathSettings(routes_file=routes_file(state) if fast else None),
    )


@contextlib.asynccontextmanager
async def running_envoy(envoy: EnvoySettings, state: Path) -> AsyncIterator[Path]:
    """Envoy on `envoy`'s bootstrap, until it answers /ready; yields its access log."""
    config = state / "envoy.yaml"
    config.write_text(render_yaml(envoy))
    access_log = state / "access.log"
    with access_log.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            *envoy_argv(config, concurrency=1, log_level="warning"),
            stdout=log,
            stderr=asyncio.subprocess.DEVNULL,
        )
    try:
        await wait_envoy_ready(envoy.admin, process)
        yield access_log
    finally:
        process.terminate()
        await process.wait()


@contextlib.asynccontextmanager
async def running_lifecycle(
    sandboxes: Iterable[pb.Sandbox],
) -> AsyncIterator[tuple[FakeLifecycle, str]]:
    lifecycle = FakeLifecycle()
    for sandbox in sandboxes:
        copy = pb.Sandbox()
        copy.CopyFrom(sandbox)
        lifecycle.add(copy)
    server, target = await start_fake(lifecycle)
    try:
        yield lifecycle, target
    finally:
        await server.stop(0)


@contextlib.asynccontextmanager
async def running_gateway(
    directory: Path, identity: Path, sandboxes: Iterable[pb.Sandbox], *, fast: bool
) -> AsyncIterator[Gateway]:
    """The edge (in this process) and Envoy over a FakeLifecycle holding `sandboxes`."""
    state = directory / ("fast" if fast else "checked")
    write_state(state, identity)
    envoy = envoy_settings(state, fast=fast)
    async with running_lifecycle(sandboxes) as (lifecycle, target):
        edge = Edge(edge_settings(state, target, fast=fast))
        await edge.start()
        try:
            async with running_envoy(envoy, state) as access_log:
                yield Gateway(
                    fast, f"http://{envoy.listen}", envoy.admin, edge, lifecycle, access_log
                )
        finally:
            await edge.stop(0)
