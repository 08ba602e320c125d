"""The lifecycle process: one grpc.aio server, the backend's tasks, SIGTERM with a grace.

Health (grpc.health.v1) says NOT_SERVING until the backend has re-adopted its sandboxes and
SERVING after, for "" and for both services, so a client that waits for SERVING never sees a
half-recovered directory.

Who may call, locally: a `unix:` listen address gets a 0600 socket file (only the service's
own user can connect), and with a caller token every RPC but health must carry it
(`caller_auth`). In Kubernetes mode the service listens on the pod network and speaks mutual
TLS with the certificates of Secret `lifecycle_tls_secret` (extproc.k8s.lifecycle_tls): the
handshake refuses a caller without a certificate of our CA, and every RPC then checks that
the certificate is the edge's. That replaces the caller token there (both still combine if a
token file is given). kubelet's gRPC probe cannot speak TLS, so `health_listen` serves
grpc.health.v1, and nothing else, in plaintext on a port of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2_grpc as pb_grpc
from extproc.core.flags import unix_socket_path
from extproc.core.identity import TlsIdentity
from extproc.lifecycle import handling
from extproc.lifecycle.backend import Backend
from extproc.lifecycle.build_service import SnapshotServicer, TemplateBuildServicer
from extproc.lifecycle.caller_auth import CallerAuth
from extproc.lifecycle.interceptors import HandlerInterceptor
from extproc.lifecycle.rpc_logging import RpcLogging
from extproc.lifecycle.service import SandboxServicer, TemplateServicer
from extproc.lifecycle.settings import LifecycleSettings
from extproc.lifecycle.volume_service import VolumeServicer

log = logging.getLogger(__name__)
SERVICES = (
    "",
    "agentcube.e2b.v1.SandboxService",
    "agentcube.e2b.v1.TemplateService",
    "agentcube.e2b.v1.VolumeService",
    "agentcube.e2b.v1.TemplateBuildService",
    "agentcube.e2b.v1.SnapshotService",
)


@dataclass
class Running:
    server: grpc.aio.Server
    port: int
    backend: ManagedBackend
    # the plaintext health-only port (`health_listen`); 0 without one
    probe_port: int = 0


class ManagedBackend(Backend, Protocol):
    async def start(self) -> list[asyncio.Task[None]]: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class Assembly:
    backend: ManagedBackend
    # Kubernetes mode: the server's mutual-TLS identity; None serves plaintext.
    tls: TlsIdentity | None = None


async def assemble(settings: LifecycleSettings) -> Assembly:
    """The configured backend, and in Kubernetes mode the TLS identity from its Secret
    (created if absent); the Kubernetes client is imported only when it is chosen."""
    if settings.backend == "local":
        from extproc.lifecycle.local import LocalBackend

        return Assembly(LocalBackend(settings.local))
    if settings.backend == "kubernetes":
        from extproc.k8s.client import api_client
        from extproc.k8s.lifecycle_tls import load_or_create_server_tls
        from extproc.k8s.resources import Resources
        from extproc.lifecycle.kubernetes import KubernetesBackend

        kube = settings.kubernetes
        api = Resources(api_client(kube.kubeconfig, kube.context))
        backend = KubernetesBackend(kube, api)
        if not kube.lifecycle_tls_secret:
            return Assembly(backend)
        try:
            tls = await load_or_create_server_tls(api, kube.namespace, kube.lifecycle_tls_secret)
        except BaseException:
            await backend.close()
            raise
        return Assembly(backend, tls)
    raise ValueError(f"backend {settings.backend!r} is not available; use local or kubernetes")


AuthContext = Mapping[str, Iterable[bytes]]
_NOT_THE_EDGE = "the lifecycle service admits only the edge's client certificate"


def _guarded(
    handler: grpc.RpcMethodHandler, allowed: Callable[[AuthContext], bool]
) -> grpc.RpcMethodHandler:
    """`handler`, refusing with UNAUTHENTICATED a call whose TLS peer is not `allowed`.
    grpc.aio interceptors never see the call's context, so the check runs inside the handler;
    streaming handlers keep their style (an async generator, or a coroutine that writes)."""

    async def check(context: grpc.aio.ServicerContext[Any, Any]) -> None:
        if not allowed(context.auth_context()):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, _NOT_THE_EDGE)

    codecs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        unary: Callable[..., Awaitable[Any]] = handler.unary_unary

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await check(context)
            return await unary(request, context)

        return grpc.unary_unary_rpc_method_handler(unary_unary, **codecs)
    if handler.unary_stream is not None and inspect.isasyncgenfunction(handler.unary_stream):
        generate: Callable[..., AsyncIterator[Any]] = handler.unary_stream

        async def stream_out(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            await check(context)
            async for response in generate(request, context):
                yield response

        return grpc.unary_stream_rpc_method_handler(stream_out, **codecs)
    if handler.unary_stream is not None:
        write: Callable[..., Awaitable[None]] = handler.unary_stream

        async def writing(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            await check(context)
            await write(request, context)

        return grpc.unary_stream_rpc_method_handler(writing, **codecs)

    async def refuse(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "client streaming is not served")

    # Neither service has client-streaming RPCs; refuse rather than pass one unchecked.
    if handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse, **codecs)
    return grpc.stream_unary_rpc_method_handler(refuse, **codecs)


class PeerCheck(HandlerInterceptor):
    """Every RPC's verified TLS peer must pass `allowed` (mutual TLS only)."""

    def __init__(self, allowed: Callable[[AuthContext], bool]) -> None:
        self._allowed = allowed

    def serve(
        self, method: str, metadata: Any, handler: grpc.RpcMethodHandler
    ) -> grpc.RpcMethodHandler:
        return _guarded(handler, self._allowed)


def _callers(tls: TlsIdentity | None, caller_token: str | None) -> str:
    """Who may call, for the start-up log line."""
    checks = ["mutual TLS, the edge's certificate only"] if tls is not None else []
    checks += ["the caller token"] if caller_token is not None else []
    return " + ".join(checks) or "not authenticated"


def new_server(tls: TlsIdentity | None, caller_token: str | None) -> grpc.aio.Server:
    """The gRPC server, with the checks of who may call: with `tls`, the peer must be the
    edge; with `caller_token`, every RPC but health must carry it."""
    # first: a call the checks below refuse is logged as well
    interceptors: list[grpc.aio.ServerInterceptor] = [RpcLogging()]
    if tls is not None:
        from extproc.k8s.lifecycle_tls import is_edge

        interceptors.append(PeerCheck(is_edge))
    if caller_token is not None:
        interceptors.append(CallerAuth(caller_token))
    return grpc.aio.server(
        interceptors=interceptors,
        # Sandboxes carry long-lived watch streams; keepalives find dead clients.
        options=[("grpc.keepalive_time_ms", 30_000)],
    )


def bind(server: grpc.aio.Server, listen: str, tls: TlsIdentity | None) -> int:
    """Listen on `listen`: plaintext, or with `tls` mutual TLS that refuses, at the
    handshake, a client without a certificate from the same CA. A unix socket is made 0600.
    The port; OSError when the address cannot be had."""
    if tls is None:
        port = int(server.add_insecure_port(listen))
    else:
        credentials = grpc.ssl_server_credentials(
            [(tls.key_pem, tls.cert_pem)], root_certificates=tls.ca_pem, require_client_auth=True
        )
        port = int(server.add_secure_port(listen, credentials))
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    socket_path = unix_socket_path(listen)
    if socket_path is not None:
        socket_path.chmod(0o600)
    return port


@dataclass(frozen=True)
class Probes:
    server: grpc.aio.Server
    port: int


async def start_probes(health_servicer: health.aio.HealthServicer, listen: str) -> Probes:
    """A plaintext server of grpc.health.v1 alone on `listen`, for probes that cannot speak
    TLS. The same servicer as the main port's, so both report the same status."""
    probes = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, probes)
    port = int(probes.add_insecure_port(listen))
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    await probes.start()
    return Probes(probes, port)


@contextlib.asynccontextmanager
async def serving(
    settings: LifecycleSettings, caller_token: str | None = None
) -> AsyncIterator[Running]:
    """Start the server and backend; on exit stop both within the configured grace.

    `caller_token`: every RPC but health must carry `authorization: Bearer <it>`; None lets
    every caller in (for deployments where the network decides who connects).
    """
    assembly = await assemble(settings)
    backend, tls = assembly.backend, assembly.tls
    server = new_server(tls, caller_token)
    pb_grpc.add_SandboxServiceServicer_to_server(
        SandboxServicer(backend, settings.max_timeout_s), server
    )
    pb_grpc.add_TemplateServiceServicer_to_server(TemplateServicer(backend), server)
    pb_grpc.add_VolumeServiceServicer_to_server(VolumeServicer(backend), server)
    pb_grpc.add_TemplateBuildServiceServicer_to_server(TemplateBuildServicer(backend), server)
    pb_grpc.add_SnapshotServiceServicer_to_server(
        SnapshotServicer(backend, settings.max_timeout_s), server
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in SERVICES:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    probes: Probes | None = None
    try:
        port = bind(server, settings.server.listen, tls)
        if settings.server.health_listen:
            probes = await start_probes(health_servicer, settings.server.health_listen)
    except BaseException:
        await backend.close()
        raise
    tasks: list[asyncio.Task[None]] = []
    content = contextlib.AsyncExitStack()
    try:
        tasks = await backend.start()
        await _serve_volume_content(content, settings, backend)
        # Callers get in only now: before its recovery the backend knows none of the running
        # sandboxes (a GetSandbox would say NOT_FOUND for a live one), and a Create would
        # race the start of isolation. Until then a caller's connection is refused, which
        # it treats as the lifecycle service being down (retryable).
        await server.start()
        for name in SERVICES:
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "lifecycle service listening on %s (callers: %s)%s",
            unix_socket_path(settings.server.listen) or f"port {port}",
            _callers(tls, caller_token),
            f", health probes on port {probes.port}" if probes is not None else "",
        )
        yield Running(server, port, backend, probes.port if probes is not None else 0)
    finally:
        for name in SERVICES:
            await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await server.stop(settings.server.grace_s)
        await handling.settle()
        await content.aclose()
        if probes is not None:
            await probes.server.stop(0)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await backend.close()


async def _serve_volume_content(
    stack: contextlib.AsyncExitStack, settings: LifecycleSettings, backend: ManagedBackend
) -> None:
    """The volume content API over HTTP, when configured (local backend: its files are here)."""
    listen = settings.server.volume_content_listen
    if not listen:
        return
    volumes = getattr(backend, "volumes", None)
    if volumes is None:
        raise ValueError("--volume-content-listen: only the local backend serves volume content")
    from extproc.lifecycle.volume_content import serving as serving_content

    await stack.enter_async_context(serving_content(volumes, listen))


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
