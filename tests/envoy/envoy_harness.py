"""Run the real Envoy binary on a generated bootstrap: admin on a unix socket, as `up` does."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from extproc.envoy_config.bootstrap import render_yaml
from extproc.envoy_config.settings import Endpoint, EnvoySettings, HostPort, UnixSocket
from support.gateway import envoy_argv, wait_envoy_ready
from support.processes import free_port


def tcp_edges(ports: Sequence[int]) -> tuple[Endpoint, ...]:
    return tuple(HostPort("127.0.0.1", port) for port in ports)


@contextlib.asynccontextmanager
async def running_envoy(
    edges: Sequence[Endpoint], directory: Path, sandbox_netns: Path | None = None
) -> AsyncIterator[EnvoySettings]:
    settings = EnvoySettings(
        listen=HostPort("127.0.0.1", free_port()),
        admin=UnixSocket(directory / "envoy-admin.sock"),
        edges=tuple(edges),
        sandbox_netns=sandbox_netns,
    )
    config = directory / "envoy.yaml"
    config.write_text(render_yaml(settings))
    log = (directory / "access.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        *envoy_argv(config, concurrency=1, log_level="warning"),
        stdout=log,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await wait_envoy_ready(settings.admin, process)
        yield settings
    finally:
        process.terminate()
        await process.wait()
        log.close()
