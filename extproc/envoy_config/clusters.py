"""The two upstream clusters: the edge (gRPC decisions) and the sandboxes (ORIGINAL_DST).

`edge`: one STATIC endpoint per edge process. Envoy keeps one HTTP/2 connection per worker per
host, so extra edge processes must be extra endpoints (distinct ports), not SO_REUSEPORT
siblings, or one process gets all the RPCs. Short connect timeout and gRPC health checks make a
dead edge fail fast (503) rather than hang requests.

`sandbox_fast` (fast path only): the same, but keyed on the `x-envoy-original-dst-host` request
header, which only a fast route sets: the first filter strips it from every client request,
and a fast route exists only for a sandbox the edge holds as running (extproc/edge/fast_path.py).

`sandbox`: ORIGINAL_DST keyed on the ext_authz dynamic metadata `upstream_host`. A client cannot
write dynamic metadata, and when authz did not run there is no host at all (503), so this can
never become an open proxy. picod and user servers are plain HTTP/1.1, so the upstream protocol
is HTTP/1.1 whatever the client spoke. With `sandbox_netns` set, Envoy opens these connections
inside that network namespace (`upstream_bind_config.source_address.network_namespace_filepath`):
the local sandboxes' addresses exist only there, and nothing else Envoy connects to does.
"""

from __future__ import annotations

from datetime import timedelta

from envoy_data_plane.envoy.config.cluster.v3 import (
    CircuitBreakers,
    CircuitBreakersThresholds,
    Cluster,
    ClusterDiscoveryType,
    ClusterLbPolicy,
    ClusterOriginalDstLbConfig,
)
from envoy_data_plane.envoy.config.core.v3 import (
    Address,
    BindConfig,
    HealthCheck,
    HealthCheckGrpcHealthCheck,
    Http1ProtocolOptions,
    Http2ProtocolOptions,
    HttpProtocolOptions,
    Pipe,
    RoutingPriority,
    SocketAddress,
)
from envoy_data_plane.envoy.config.endpoint.v3 import (
    ClusterLoadAssignment,
    Endpoint,
    LbEndpoint,
    LocalityLbEndpoints,
)
from envoy_data_plane.envoy.extensions.upstreams.http.v3 import (
    HttpProtocolOptions as UpstreamHttpOptions,
)
from envoy_data_plane.envoy.extensions.upstreams.http.v3 import (
    HttpProtocolOptionsExplicitHttpConfig,
)
from envoy_data_plane.envoy.type.metadata.v3 import MetadataKey, MetadataKeyPathSegment
from envoy_data_plane.google.protobuf import Any

from extproc.core.xds_contract import FAST_CLUSTER, ORIGINAL_DST_HEADER
from extproc.envoy_config.settings import Endpoint as Listening
from extproc.envoy_config.settings import EnvoySettings, HostPort

EDGE_CLUSTER = "edge"
SANDBOX_CLUSTER = "sandbox"
VOLUME_CONTENT_CLUSTER = "volume_content"
TEMPLATE_FILES_CLUSTER = "template_files"
EXT_AUTHZ_NAMESPACE = "envoy.filters.http.ext_authz"
_HTTP_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
# The default thresholds (1024) are per cluster; one cluster fronts every sandbox.
_CLUSTER_LIMIT = 20_000
# per sandbox (HTTP/1.1 upstream: one connection per in-flight request)
_PER_SANDBOX_CONNECTIONS = 1024


def socket_address(endpoint: Listening, *, owner_only: bool = False) -> Address:
    """A TCP address or a `pipe`; `owner_only`: a pipe Envoy listens on gets mode 0600."""
    if isinstance(endpoint, HostPort):
        return Address(
            socket_address=SocketAddress(address=endpoint.host, port_value=endpoint.port)
        )
    return Address(pipe=Pipe(path=str(endpoint.path), mode=0o600 if owner_only else 0))


def _http_options(*, http2: bool, idle: timedelta) -> dict[str, Any]:
    explicit = (
        HttpProtocolOptionsExplicitHttpConfig(http2_protocol_options=Http2ProtocolOptions())
        if http2
        else HttpProtocolOptionsExplicitHttpConfig(http_protocol_options=Http1ProtocolOptions())
    )
    options = UpstreamHttpOptions(
        common_http_protocol_options=HttpProtocolOptions(idle_timeout=idle),
        explicit_http_config=explicit,
    )
    return {_HTTP_OPTIONS_KEY: Any.pack(options)}


def _breakers(*, per_host: int | None = None) -> CircuitBreakers:
    default = CircuitBreakersThresholds(
        priority=RoutingPriority.DEFAULT,
        max_connections=_CLUSTER_LIMIT,
        max_pending_requests=_CLUSTER_LIMIT,
        max_requests=_CLUSTER_LIMIT,
        max_retries=16,
    )
    per_host_thresholds = (
        [CircuitBreakersThresholds(priority=RoutingPriority.DEFAULT, max_connections=per_host)]
        if per_host is not None
        else []
    )
    return CircuitBreakers(thresholds=[default], per_host_thresholds=per_host_thresholds)


def edge_cluster(settings: EnvoySettings) -> Cluster:
    endpoints = [
        LbEndpoint(endpoint=Endpoint(address=socket_address(edge))) for edge in settings.edges
    ]
    return Cluster(
        name=EDGE_CLUSTER,
        type=ClusterDiscoveryType.STATIC,
        connect_timeout=timedelta(milliseconds=250),
        # every RPC is balanced, not every connection (see the module docstring)
        lb_policy=ClusterLbPolicy.LEAST_REQUEST,
        load_assignment=ClusterLoadAssignment(
            cluster_name=EDGE_CLUSTER, endpoints=[LocalityLbEndpoints(lb_endpoints=endpoints)]
        ),
        typed_extension_protocol_options=_http_options(http2=True, idle=timedelta(hours=1)),
        health_checks=[
            HealthCheck(
                timeout=timedelta(milliseconds=250),
                interval=timedelta(seconds=2),
                # an edge that comes back is routable again within about a second
                unhealthy_interval=timedelta(milliseconds=500),
                no_traffic_interval=timedelta(seconds=2),
                unhealthy_threshold=2,
                healthy_threshold=1,
                grpc_health_check=HealthCheckGrpcHealthCheck(),
            )
        ],
        circuit_breakers=_breakers(),
    )


def _lifecycle_http_cluster(name: str, listening: Listening) -> Cluster:
    """One HTTP/1.1 endpoint of the lifecycle service's."""
    endpoint = LbEndpoint(endpoint=Endpoint(address=socket_address(listening)))
    return Cluster(
        name=name,
        type=ClusterDiscoveryType.STATIC,
        connect_timeout=timedelta(seconds=1),
        load_assignment=ClusterLoadAssignment(
            cluster_name=name, endpoints=[LocalityLbEndpoints(lb_endpoints=[endpoint])]
        ),
        typed_extension_protocol_options=_http_options(http2=False, idle=timedelta(seconds=60)),
        circuit_breakers=_breakers(),
    )


def volume_content_clusters(settings: EnvoySettings) -> list[Cluster]:
    """The lifecycle service's volume content API (one HTTP/1.1 endpoint), when it has one."""
    if settings.volume_content is None:
        return []
    return [_lifecycle_http_cluster(VOLUME_CONTENT_CLUSTER, settings.volume_content)]


def template_files_clusters(settings: EnvoySettings) -> list[Cluster]:
    """The lifecycle service's upload server for template build files, when it has one."""
    if settings.template_files is None:
        return []
    return [_lifecycle_http_cluster(TEMPLATE_FILES_CLUSTER, settings.template_files)]


def sandbox_cluster(settings: EnvoySettings) -> Cluster:
    by_metadata = ClusterOriginalDstLbConfig(
        metadata_key=MetadataKey(
            key=EXT_AUTHZ_NAMESPACE, path=[MetadataKeyPathSegment(key="upstream_host")]
        )
    )
    return _original_destination(settings, SANDBOX_CLUSTER, by_metadata)


def fast_sandbox_cluster(settings: EnvoySettings) -> Cluster:
    """The fast routes' cluster: the sandbox cluster with the host from the route's header."""
    by_header = ClusterOriginalDstLbConfig(
        use_http_header=True, http_header_name=ORIGINAL_DST_HEADER
    )
    return _original_destination(settings, FAST_CLUSTER, by_header)


def _original_destination(
    settings: EnvoySettings, name: str, lb_config: ClusterOriginalDstLbConfig
) -> Cluster:
    bind = (
        BindConfig(
            source_address=SocketAddress(
                address="0.0.0.0",
                port_value=0,
                network_namespace_filepath=str(settings.sandbox_netns),
            )
        )
        if settings.sandbox_netns is not None
        else None
    )
    return Cluster(
        name=name,
        type=ClusterDiscoveryType.ORIGINAL_DST,
        lb_policy=ClusterLbPolicy.CLUSTER_PROVIDED,
        # a refused port fails at once; this bounds a black-holed (dead pod) address
        connect_timeout=timedelta(seconds=2),
        cleanup_interval=timedelta(seconds=60),
        original_dst_lb_config=lb_config,
        typed_extension_protocol_options=_http_options(http2=False, idle=timedelta(seconds=60)),
        circuit_breakers=_breakers(per_host=_PER_SANDBOX_CONNECTIONS),
        upstream_bind_config=bind,
    )
