"""Assembling the edge process: one grpc.aio server, its watchers and the metrics endpoint.

`Edge.start()` binds and starts everything and returns once ports are known; health turns
SERVING only when the key index is loaded and the directory has synced, so Envoy's health
check keeps traffic away from an edge that would wrongly answer "not found". `run()` is the
process: start, wait for SIGTERM/SIGINT, stop with a bounded grace.

Kubernetes mode (`--keys-source kubernetes` and/or `--directory-source kubernetes`) swaps the
key store and/or the directory feed for informers (extproc.k8s); the Check is the same code.
The cluster directory counts only Sandboxes proven to be the lifecycle's (k8s/object_proof.py),
so it needs the proof key: the command reads it into the settings (waiting for the lifecycle
service to create it); an Edge built without it reads it in `start()` and refuses to start
when it is absent, since a directory without the key could route nothing.
Once synced, health stays SERVING while the API server is unreachable: fail static. The
caches hold the last known keys and routes, and taking every edge replica out of Envoy's and
kubelet's rotation because the control plane blinked would turn an API-server outage into a
full data-plane outage. The staleness is reported instead: health service
`agentcube.e2b.edge.Kubernetes` turns NOT_SERVING while any informer is disconnected (nothing
probes it for readiness), and the `agentcube_e2b_edge_informer_*` metrics carry each
informer's connected / last sync / relists / last error. The cost is that a key revoked during
the outage is honoured until the API server is back.

With `fast_path.routes_file` set (`up` does), the same server also speaks ADS to Envoy
(xds_server.py) and the fast path (fast_path.py) keeps Envoy's routes in step with the
directory; a platform change then also waits for Envoy to drop what it made stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable

import grpc
from envoy.service.auth.v3 import external_auth_pb2_grpc as auth_grpc
from envoy.service.discovery.v3 import ads_pb2_grpc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2_grpc as pb_grpc
from extproc.core.flags import unix_socket_path
from extproc.edge.authz import AuthorizationServicer
from extproc.edge.cluster_watching import ClusterDirectoryFeed
from extproc.edge.decision import SandboxDecider
from extproc.edge.extproc import ExternalProcessorServicer
from extproc.edge.fast_path import FastPath
from extproc.edge.keystore import KeyStore
from extproc.edge.lifecycle_channel import lifecycle_channel
from extproc.edge.metrics import EdgeMetrics, start_metrics_server
from extproc.edge.platform import PlatformApi
from extproc.edge.sandbox_directory import Directory
from extproc.edge.settings import EdgeSettings
from extproc.edge.signed_routing import SignatureRouter
from extproc.edge.tokens import TokenSigner
from extproc.edge.watching import DirectoryFeed, unsettled
from extproc.edge.xds_routes import FastRoutes
from extproc.edge.xds_server import XdsServer

# The Kubernetes client takes about half a second to import: only Kubernetes mode pays it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from kubernetes.client import ApiClient

    from extproc.k8s.informing import Informer
    from extproc.k8s.keys import KeyInformers

log = logging.getLogger(__name__)

SERVICES = (
    "envoy.service.auth.v3.Authorization",
    "envoy.service.ext_proc.v3.ExternalProcessor",
    "envoy.service.discovery.v3.AggregatedDiscoveryService",
    "",  # the whole server
)
# Kubernetes mode: SERVING while every informer is connected; reported, never probed.
KUBERNETES_SERVICE = "agentcube.e2b.edge.Kubernetes"


class Edge:
    def __init__(self, settings: EdgeSettings) -> None:
        self.settings = settings
        self.metrics = EdgeMetrics()
        self.directory = Directory()
        self.signer = TokenSigner(settings.tokens)
        self._channel = lifecycle_channel(
            settings.directory.lifecycle_target,
            settings.directory.lifecycle_token_file,
            settings.directory.lifecycle_tls,
        )
        self.informers: list[Informer] = []
        self._kube_client: ApiClient | None = None
        self._close_kube_client: Callable[[], None] = lambda: None
        self.keys: KeyStore | KeyInformers = KeyStore(settings.keys)
        self.feed: DirectoryFeed | ClusterDirectoryFeed
        lifecycle = pb_grpc.SandboxServiceStub(self._channel)
        if settings.kubernetes.directory_source == "kubernetes":
            self.feed = ClusterDirectoryFeed(
                self.directory,
                settings.directory,
                settings.kubernetes.miss_wait_s,
                lifecycle=lifecycle,
            )
        else:
            self.feed = DirectoryFeed(lifecycle, self.directory, settings.directory)
        if settings.kubernetes.enabled:
            self._use_kubernetes()
        self.feed.on_gone = self.signer.forget
        self.health = HealthServicer()
        self.server = grpc.aio.server()
        self.authz = AuthorizationServicer(
            self.keys,
            SandboxDecider(self.directory, settings.domain),
            self.feed,
            self.signer,
            self.metrics,
            # Signed URLs that name no sandbox are found by the token that verifies them:
            # only the local feed's routes hold tokens (Kubernetes routes hold digests).
            signatures=SignatureRouter(self.directory)
            if isinstance(self.feed, DirectoryFeed)
            else None,
        )
        self.processor = ExternalProcessorServicer(
            PlatformApi(
                self._channel,
                settings.domain,
                forget=self.feed.forget,
                quotas=lambda: self.keys.index.quotas,
                learn=self.feed.learn,
                # Informers are one per edge too, but a stale route to a paused or killed pod
                # fails within the 2 s connect timeout (502) instead of hanging on a stopped
                # daemon: only the local feed's watch is worth waiting for.
                settling=self.feed.settling if isinstance(self.feed, DirectoryFeed) else unsettled,
            ),
            self.metrics,
            settings.max_body_bytes,
        )
        self.xds: XdsServer | None = None
        self.fast_path: FastPath | None = None
        if settings.fast_path.routes_file is not None:
            self._use_fast_path()
        auth_grpc.add_AuthorizationServicer_to_server(self.authz, self.server)
        ep_grpc.add_ExternalProcessorServicer_to_server(self.processor, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.metrics.watch_sizes(
            lambda: len(self.directory), lambda: len(self.keys.index), lambda: len(self.signer)
        )
        if settings.kubernetes.enabled:
            self.metrics.watch_informers(
                lambda: {informer.target.name: informer.status for informer in self.informers}
            )
        self.port = 0
        self.metrics_port = 0
        self.watchers: list[asyncio.Task[None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._metrics_server: asyncio.Server | None = None

    def _use_fast_path(self) -> None:
        """Serve Envoy its routes with a fast route per running sandbox (local mode only)."""
        if not isinstance(self.feed, DirectoryFeed):
            raise ValueError(
                "the fast path needs the lifecycle directory: the Kubernetes one holds only "
                "token digests, which Envoy cannot check a request's token against"
            )
        routes_file = self.settings.fast_path.routes_file
        assert routes_file is not None
        self.xds = XdsServer(self.metrics)
        self.fast_path = FastPath(
            self.directory,
            self.signer,
            FastRoutes(routes_file.read_bytes(), self.settings.domain),
            self.xds,
            self.settings.fast_path,
        )
        xds = self.xds
        wait_s = self.settings.fast_path.landed_wait_s
        self.feed.landed = lambda sandbox_id: xds.landed(sandbox_id, wait_s)
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(xds, self.server)
        fast_path = self.fast_path
        self.metrics.watch_fast_path(lambda: len(fast_path), lambda: len(xds.gated))

    def _use_kubernetes(self) -> None:
        """Swap in the informer-backed key index and/or directory feed."""
        from extproc.k8s.client import api_client
        from extproc.k8s.keys import KeyInformers

        kube = self.settings.kubernetes
        client = api_client(kube.kubeconfig)
        self._kube_client = client
        self._close_kube_client = client.close
        if kube.keys_source == "kubernetes":
            self.keys = KeyInformers(client, kube.keys, kube.informer)
            self.informers += [self.keys.secret, self.keys.config]
        if isinstance(self.feed, ClusterDirectoryFeed) and kube.proof_key:
            self._attach_sandbox_informers(kube.proof_key)

    def _attach_sandbox_informers(self, proof_key: bytes) -> None:
        from extproc.k8s.directory import SandboxInformers

        assert isinstance(self.feed, ClusterDirectoryFeed) and self._kube_client is not None
        kube = self.settings.kubernetes
        sandboxes = SandboxInformers(self._kube_client, kube.informer, self.feed, proof_key)
        self.feed.attach(sandboxes)
        self.informers += sandboxes.informers

    async def _load_proof_key(self) -> None:
        """Kubernetes directory without `kubernetes.proof_key` in the settings (the command
        reads it; an embedding caller may not have): read it, then attach the informers."""
        from extproc.k8s.object_proof import load_proof_key
        from extproc.k8s.resources import Resources

        assert self._kube_client is not None
        kube = self.settings.kubernetes
        api = Resources(self._kube_client, workers=1)
        try:
            key = await load_proof_key(api, kube.namespace, kube.proof_secret)
        finally:
            api.close()
        self._attach_sandbox_informers(key)

    async def start(self) -> None:
        if isinstance(self.feed, ClusterDirectoryFeed) and self.feed.informers is None:
            await self._load_proof_key()
        self.port = self.server.add_insecure_port(self.settings.listen)
        if self.port == 0:
            raise OSError(f"cannot listen on {self.settings.listen}")
        socket_path = unix_socket_path(self.settings.listen)
        if socket_path is not None:
            socket_path.chmod(0o600)  # only the gateway's user (Envoy) may connect
        for service in SERVICES:
            await self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        if self.informers:
            await self.health.set(KUBERNETES_SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.start()
        if self.settings.metrics_listen:
            try:
                self._metrics_server = await start_metrics_server(
                    self.metrics, self.settings.metrics_listen
                )
            except OSError:
                await self.server.stop(0)
                await self._channel.close()
                raise
            if unix_socket_path(self.settings.metrics_listen) is None:
                self.metrics_port = self._metrics_server.sockets[0].getsockname()[1]
        self.watchers = [
            asyncio.create_task(self.keys.watch(), name="edge-keys-watch"),
            asyncio.create_task(self.feed.watch(), name="edge-directory-watch"),
        ]
        self._tasks = [
            *self.watchers,
            asyncio.create_task(self._serve_when_ready(), name="edge-readiness"),
        ]
        if self.fast_path is not None:
            # a crash of the fast path is a crash of the edge (`run` watches `watchers`)
            fast = asyncio.create_task(self.fast_path.run(self.feed.synced), name="edge-fast-path")
            self.watchers.append(fast)
            self._tasks.append(fast)
        if self.informers:
            self._tasks.append(
                asyncio.create_task(self._report_connection(), name="edge-kubernetes-health")
            )
        log.info(
            "edge listening on %s (metrics %s)",
            socket_path or f"port {self.port}",
            self.metrics_port or self.settings.metrics_listen or "off",
        )

    async def _serve_when_ready(self) -> None:
        await self.keys.loaded.wait()
        await self.feed.synced.wait()
        for service in SERVICES:
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        log.info("edge is SERVING")

    async def _report_connection(self) -> None:
        """Mirror "every informer connected" into KUBERNETES_SERVICE, on each status change."""
        reported: bool | None = None
        # The first connection attempt is not an outage: warn only after having been live.
        was_connected = False
        changed = asyncio.Event()

        async def follow(informer: Informer) -> None:
            while True:
                seen = informer.status.connected
                changed.set()

                def flipped(current: Informer, seen: bool = seen) -> bool:
                    return current.status.connected != seen

                await informer.wait_for(flipped)

        async with asyncio.TaskGroup() as group:
            for informer in self.informers:
                group.create_task(follow(informer), name=f"edge-follow-{informer.target.name}")
            while True:
                await changed.wait()
                changed.clear()
                connected = all(informer.status.connected for informer in self.informers)
                if connected != reported:
                    reported = connected
                    status = health_pb2.HealthCheckResponse
                    await self.health.set(
                        KUBERNETES_SERVICE, status.SERVING if connected else status.NOT_SERVING
                    )
                    if connected:
                        log.info("Kubernetes API connected: caches are live")
                    elif was_connected:
                        log.warning("Kubernetes API unreachable: serving from the caches")
                    was_connected = was_connected or connected

    async def stop(self, grace: float | None = None) -> None:
        grace = self.settings.shutdown_grace_s if grace is None else grace
        await self.health.enter_graceful_shutdown()
        if self.xds is not None:
            self.xds.close()  # its streams never end by themselves
        await self.server.stop(grace)
        await self.feed.resumes.close()
        if self.fast_path is not None:
            self.fast_path.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._metrics_server is not None:
            self._metrics_server.close()
            await self._metrics_server.wait_closed()
            metrics_socket = unix_socket_path(self.settings.metrics_listen)
            if metrics_socket is not None:  # Python before 3.13 leaves it behind
                metrics_socket.unlink(missing_ok=True)
        await self._channel.close()
        self._close_kube_client()


async def run(settings: EdgeSettings) -> None:
    """The edge process: serve until SIGTERM/SIGINT (or a watcher crashes), then stop."""
    edge = Edge(settings)
    await edge.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    stop_wait = asyncio.create_task(stopping.wait(), name="edge-signal-wait")
    try:
        done, _ = await asyncio.wait(
            [stop_wait, *edge.watchers], return_when=asyncio.FIRST_COMPLETED
        )
        for task in done:
            if task is not stop_wait:
                task.result()  # watchers never return: surface the crash
        log.info("edge stopping (grace %.1fs)", settings.shutdown_grace_s)
    finally:
        stop_wait.cancel()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await edge.stop()
