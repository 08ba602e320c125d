"""The HTTP filter chain, in order: header_mutation, ext_authz, ext_proc, router.

header_mutation runs first so that nothing a client sends can pose as something the gateway
set: the ORIGINAL_DST header (unused by our cluster, stripped anyway), the user picod trusts
only from the edge, and the tenant. ext_authz decides every request; ext_proc (platform routes
only, disabled per route elsewhere) answers the platform API. No filter after ext_authz may
clear the route cache: that could move an authorised request onto a route with other settings.
"""

from __future__ import annotations

from datetime import timedelta

from envoy_data_plane.envoy.config.common.mutation_rules.v3 import (
    HeaderMutation as HeaderOperation,
)
from envoy_data_plane.envoy.config.core.v3 import ApiVersion, GrpcService, GrpcServiceEnvoyGrpc
from envoy_data_plane.envoy.extensions.filters.http.ext_authz.v3 import ExtAuthz
from envoy_data_plane.envoy.extensions.filters.http.ext_proc.v3 import (
    ExternalProcessor,
    MetadataOptions,
    MetadataOptionsMetadataNamespaces,
    ProcessingMode,
    ProcessingModeBodySendMode,
    ProcessingModeHeaderSendMode,
)
from envoy_data_plane.envoy.extensions.filters.http.header_mutation.v3 import (
    HeaderMutation,
    Mutations,
)
from envoy_data_plane.envoy.extensions.filters.http.router.v3 import Router
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
    HttpFilter,
)
from envoy_data_plane.envoy.type.matcher.v3 import ListStringMatcher, StringMatcher
from envoy_data_plane.envoy.type.v3 import HttpStatus, StatusCode
from envoy_data_plane.google.protobuf import Any

from extproc.envoy_config.clusters import EDGE_CLUSTER, EXT_AUTHZ_NAMESPACE

HEADER_MUTATION = "envoy.filters.http.header_mutation"
EXT_AUTHZ = EXT_AUTHZ_NAMESPACE
EXT_PROC = "envoy.filters.http.ext_proc"
ROUTER = "envoy.filters.http.router"
# The ext_proc attribute with the port the request's connection was accepted on.
LISTENER_PORT_ATTRIBUTE = "destination.port"

# Headers only the gateway may set (docs/contracts: Envoy <-> edge).
STRIPPED_REQUEST_HEADERS = (
    "x-envoy-original-dst-host",
    "x-agentcube-e2b-user",
    "x-agentcube-tenant",
)
# What the edge needs to decide; `:authority`, `:path` and `:method` arrive anyway. A short
# list keeps each CheckRequest small, which is most of its parse cost in Python.
AUTHZ_HEADERS = (
    "x-api-key",
    "authorization",
    "x-access-token",
    "e2b-sandbox-id",
    "e2b-sandbox-port",
    "e2b-traffic-access-token",
    "accept",
    "user-agent",
    "x-request-id",  # read only off the hot path: lifecycle calls and denials (core/logs.py)
)
# The edge answers from its in-memory indexes in microseconds, but a burst queues: 1000
# command streams opened at once on 2 cores kept Checks waiting past 250 ms, and each of
# those became a 503 (docs/reliability.md). A busy edge must slow requests, not fail them.
_AUTHZ_TIMEOUT = timedelta(seconds=2)
# Platform calls wait for the lifecycle service (a cold sandbox start); the SDK gives up at 60 s.
_EXT_PROC_MESSAGE_TIMEOUT = timedelta(seconds=60)


def _edge(timeout: timedelta) -> GrpcService:
    return GrpcService(envoy_grpc=GrpcServiceEnvoyGrpc(cluster_name=EDGE_CLUSTER), timeout=timeout)


def header_mutation() -> HttpFilter:
    mutations = Mutations(
        request_mutations=[HeaderOperation(remove=name) for name in STRIPPED_REQUEST_HEADERS]
    )
    return HttpFilter(
        name=HEADER_MUTATION, typed_config=Any.pack(HeaderMutation(mutations=mutations))
    )


def ext_authz() -> HttpFilter:
    config = ExtAuthz(
        grpc_service=_edge(_AUTHZ_TIMEOUT),
        transport_api_version=ApiVersion.V3,
        # fail closed: no decision, no request (the 503 gets an E2B JSON body, see local_replies)
        failure_mode_allow=False,
        status_on_error=HttpStatus(code=StatusCode.ServiceUnavailable),
        allowed_headers=ListStringMatcher(
            patterns=[StringMatcher(exact=name) for name in AUTHZ_HEADERS]
        ),
        # with_request_body is deliberately unset: sandbox bodies (file uploads, command
        # streams) must never be buffered; platform bodies go to ext_proc instead.
        validate_mutations=True,
        emit_filter_state_stats=True,
    )
    return HttpFilter(name=EXT_AUTHZ, typed_config=Any.pack(config))


def ext_proc() -> HttpFilter:
    config = ExternalProcessor(
        grpc_service=_edge(_EXT_PROC_MESSAGE_TIMEOUT),
        failure_mode_allow=False,
        message_timeout=_EXT_PROC_MESSAGE_TIMEOUT,
        # The edge answers at the request-headers phase, or at the body phase when there is a
        # body (buffered up to the listener's buffer limit, 1 MiB); it never sees responses.
        processing_mode=ProcessingMode(
            request_header_mode=ProcessingModeHeaderSendMode.SEND,
            response_header_mode=ProcessingModeHeaderSendMode.SKIP,
            request_body_mode=ProcessingModeBodySendMode.BUFFERED,
            response_body_mode=ProcessingModeBodySendMode.NONE,
            request_trailer_mode=ProcessingModeHeaderSendMode.SKIP,
            response_trailer_mode=ProcessingModeHeaderSendMode.SKIP,
        ),
        # the tenant comes from ext_authz's verdict, never from a header
        metadata_options=MetadataOptions(
            forwarding_namespaces=MetadataOptionsMetadataNamespaces(untyped=[EXT_AUTHZ_NAMESPACE])
        ),
        # the listener's port, which the Host loses (strip_any_host_port): template upload
        # links must name it (edge/template_api.py)
        request_attributes=[LISTENER_PORT_ATTRIBUTE],
    )
    return HttpFilter(name=EXT_PROC, typed_config=Any.pack(config))


def router() -> HttpFilter:
    return HttpFilter(name=ROUTER, typed_config=Any.pack(Router()))


def http_filters() -> list[HttpFilter]:
    return [header_mutation(), ext_authz(), ext_proc(), router()]
