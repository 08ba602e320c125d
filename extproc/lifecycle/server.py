"""The lifecycle process: one grpc.aio server, the backend's tasks, SIGTERM with a grace.

Health (grpc.health.v1) says NOT_SERVING until the backend has re-adopted its sandboxes and
SERVING after, for "" and for both services, so a client that waits for SERVING never sees a
half-recovered directory.

With a caller token every RPC but health must carry it (`caller_auth`). A `unix:` listen
address gets a 0600 socket file: only the service's own user can connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2_grpc as pb_grpc
from extproc.core.flags import unix_socket_path
from extproc.lifecycle.backend import Backend
from extproc.lifecycle.caller_auth import CallerAuth
from extproc.lifecycle.service import SandboxServicer, TemplateServicer
from extproc.lifecycle.settings import LifecycleSettings

log = logging.getLogger(__name__)
SERVICES = ("", "agentcube.e2b.v1.SandboxService", "agentcube.e2b.v1.TemplateService")


@dataclass
class Running:
    server: grpc.aio.Server
    port: int
    backend: ManagedBackend


class ManagedBackend(Backend, Protocol):
    async def start(self) -> list[asyncio.Task[None]]: ...

    async def close(self) -> None: ...


def make_backend(settings: LifecycleSettings) -> ManagedBackend:
    """The configured backend; the Kubernetes client is imported only when it is chosen."""
    if settings.backend == "local":
        from extproc.lifecycle.local import LocalBackend

        return LocalBackend(settings.local)
    if settings.backend == "kubernetes":
        from extproc.k8s.client import api_client
        from extproc.k8s.resources import Resources
        from extproc.lifecycle.kubernetes import KubernetesBackend

        kube = settings.kubernetes
        return KubernetesBackend(kube, Resources(api_client(kube.kubeconfig, kube.context)))
    raise ValueError(f"backend {settings.backend!r} is not available; use local or kubernetes")


@contextlib.asynccontextmanager
async def serving(
    settings: LifecycleSettings, caller_token: str | None = None
) -> AsyncIterator[Running]:
    """Start the server and backend; on exit stop both within the configured grace.

    `caller_token`: every RPC but health must carry `authorization: Bearer <it>`; None lets
    every caller in (for deployments where the network decides who connects).
    """
    backend = make_backend(settings)
    server = grpc.aio.server(
        interceptors=[CallerAuth(caller_token)] if caller_token is not None else None,
        # Sandboxes carry long-lived watch streams; keepalives find dead clients.
        options=[("grpc.keepalive_time_ms", 30_000)],
    )
    pb_grpc.add_SandboxServiceServicer_to_server(
        SandboxServicer(backend, settings.max_timeout_s), server
    )
    pb_grpc.add_TemplateServiceServicer_to_server(TemplateServicer(backend), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in SERVICES:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    port = server.add_insecure_port(settings.server.listen)
    if port == 0:
        raise OSError(f"cannot listen on {settings.server.listen}")
    socket_path = unix_socket_path(settings.server.listen)
    if socket_path is not None:
        socket_path.chmod(0o600)
    await server.start()
    tasks: list[asyncio.Task[None]] = []
    try:
        tasks = await backend.start()
        for name in SERVICES:
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "lifecycle service listening on %s (callers %s)",
            socket_path or f"port {port}",
            "authenticated" if caller_token is not None else "not authenticated",
        )
        yield Running(server, port, backend)
    finally:
        for name in SERVICES:
            await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await server.stop(settings.server.grace_s)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await backend.close()


async def run(settings: LifecycleSettings, caller_token: str | None = None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with serving(settings, caller_token) as running:
        ended = asyncio.create_task(running.server.wait_for_termination(), name="grpc-server")
        stopping = asyncio.create_task(stop.wait(), name="lifecycle-stop-signal")
        await asyncio.wait([ended, stopping], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        log.info("lifecycle service stopping (grace %.1f s)", settings.server.grace_s)
    ended.cancel()
    return 0
