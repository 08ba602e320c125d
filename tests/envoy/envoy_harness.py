"""Run the real Envoy binary on a generated bootstrap, on free loopback ports."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from extproc.envoy_config.bootstrap import render_yaml
from extproc.envoy_config.settings import EnvoySettings, HostPort
from support.gateway import ENVOY as ENVOY  # test_bootstrap runs it directly
from support.gateway import envoy_argv
from support.processes import free_port


async def wait_ready(admin: HostPort, process: asyncio.subprocess.Process) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(500):
            if process.returncode is not None:
                raise RuntimeError(f"envoy exited with {process.returncode}")
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(f"http://{admin}/ready")).status_code == 200:
                    return
            await asyncio.sleep(0.02)  # polling an external process; no event to await
    raise TimeoutError("envoy did not become ready")


@contextlib.asynccontextmanager
async def running_envoy(edge_ports: list[int], directory: Path) -> AsyncIterator[EnvoySettings]:
    settings = EnvoySettings(
        listen=HostPort("127.0.0.1", free_port()),
        admin=HostPort("127.0.0.1", free_port()),
        edges=tuple(HostPort("127.0.0.1", port) for port in edge_ports),
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
        await wait_ready(settings.admin, process)
        yield settings
    finally:
        process.terminate()
        await process.wait()
        log.close()
