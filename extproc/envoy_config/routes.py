"""Virtual hosts and routes: which requests are platform API calls and which go to a sandbox.

- `api.<domain>`: the platform API.
- `*.<domain>` (`{port}-{id}.<domain>`): sandbox traffic, the target parsed from the host by the
  edge.
- anything else (localhost, an IP literal, `sandbox.<domain>`): sandbox traffic when the client
  sent `E2b-Sandbox-Id` or `E2b-Sandbox-Port` (the SDK with `E2B_SANDBOX_URL`), else the
  platform API. This mirrors E2B's client-proxy, which header-routes only on such hosts.
  One exception: `/files` with a `signature` query parameter and neither header is a signed
  URL the SDK built from `E2B_SANDBOX_URL`, which names no sandbox; it is sandbox traffic too,
  and the edge finds its sandbox by the token that verifies the signature.

One authz policy covers every sandbox route (only `surface` differs between the two kinds of
route), so no route-cache clearing can widen what a request may do.
"""

from __future__ import annotations

import json
from datetime import timedelta

from envoy_data_plane.envoy.config.core.v3 import (
    DataSource,
    HeaderValue,
    HeaderValueOption,
    HeaderValueOptionHeaderAppendAction,
)
from envoy_data_plane.envoy.config.route.v3 import (
    DirectResponseAction,
    HeaderMatcher,
    QueryParameterMatcher,
    Route,
    RouteAction,
    RouteConfiguration,
    RouteMatch,
    VirtualHost,
)
from envoy_data_plane.envoy.extensions.filters.http.ext_authz.v3 import (
    CheckSettings,
    ExtAuthzPerRoute,
)
from envoy_data_plane.envoy.extensions.filters.http.ext_proc.v3 import ExtProcPerRoute
from envoy_data_plane.envoy.type.matcher.v3 import RegexMatcher, StringMatcher
from envoy_data_plane.google.protobuf import Any

from extproc.core.template_files import PATH_PREFIX as TEMPLATE_FILES_PREFIX
from extproc.core.template_files import QUERY_PARAMETERS as TEMPLATE_FILES_QUERY
from extproc.core.volumes import CONTENT_ROUTE_PATTERN, TOKEN_PREFIX
from extproc.core.xds_contract import (
    HOST_FALLBACK_ROUTE,
    ROUTE_CONFIG,
    SANDBOX_VHOST,
    SHARED_VHOST,
)
from extproc.envoy_config.clusters import (
    SANDBOX_CLUSTER,
    TEMPLATE_FILES_CLUSTER,
    VOLUME_CONTENT_CLUSTER,
)
from extproc.envoy_config.filters import EXT_AUTHZ, EXT_PROC
from extproc.envoy_config.settings import EnvoySettings

SANDBOX_ROUTING_HEADERS = ("e2b-sandbox-id", "e2b-sandbox-port")
# Above the SDK's 50 s keepalive on command, PTY and watch streams; also bounds an idle
# websocket to a user server.
SANDBOX_IDLE_TIMEOUT = timedelta(seconds=300)
# Only seen if the platform filter chain let a request through without answering it.
UNANSWERED_BODY = json.dumps(
    {"code": 500, "message": "the platform API did not answer this request"}, separators=(",", ":")
)


def _surface(surface: str) -> Any:
    return Any.pack(
        ExtAuthzPerRoute(check_settings=CheckSettings(context_extensions={"surface": surface}))
    )


def platform_route() -> Route:
    return Route(
        name="platform",
        match=RouteMatch(prefix="/"),
        direct_response=DirectResponseAction(
            status=500, body=DataSource(inline_string=UNANSWERED_BODY)
        ),
        response_headers_to_add=[
            HeaderValueOption(
                header=HeaderValue(key="content-type", value="application/json"),
                append_action=HeaderValueOptionHeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD,
            )
        ],
        typed_per_filter_config={EXT_AUTHZ: _surface("platform")},
    )


def sandbox_route(name: str, match: RouteMatch | None = None) -> Route:
    """A route to a sandbox (the edge says which): every path unless `match` narrows it."""
    if match is None:
        match = RouteMatch(prefix="/")
    return Route(
        name=name,
        match=match,
        route=RouteAction(
            cluster=SANDBOX_CLUSTER,
            # the default 15 s spans the whole response and would cut command streams
            timeout=timedelta(0),
            idle_timeout=SANDBOX_IDLE_TIMEOUT,
        ),
        typed_per_filter_config={
            EXT_AUTHZ: _surface("sandbox"),
            EXT_PROC: Any.pack(ExtProcPerRoute(disabled=True)),
        },
    )


def _unchecked_stream_route(name: str, match: RouteMatch, cluster: str) -> Route:
    """A route to one of the lifecycle's own HTTP servers, which checks the request's
    credential itself: no ext_authz (no API key is involved) and no ext_proc, so bodies of
    any size stream both ways, with no overall deadline, only the idle one."""
    return Route(
        name=name,
        match=match,
        route=RouteAction(cluster=cluster, timeout=timedelta(0), idle_timeout=SANDBOX_IDLE_TIMEOUT),
        typed_per_filter_config={
            EXT_AUTHZ: Any.pack(ExtAuthzPerRoute(disabled=True)),
            EXT_PROC: Any.pack(ExtProcPerRoute(disabled=True)),
        },
    )


def volume_content_route() -> Route:
    """The volume content API, to the lifecycle service: only a request whose path is one of
    its operations and whose `Authorization` is a volume token's; the server checks the
    token (the credential, not an API key). Anything else falls through to the platform
    route."""
    bearer = StringMatcher(prefix=f"Bearer {TOKEN_PREFIX}")
    match = RouteMatch(
        safe_regex=RegexMatcher(regex=CONTENT_ROUTE_PATTERN),
        headers=[HeaderMatcher(name="authorization", string_match=bearer)],
    )
    return _unchecked_stream_route("volume-content", match, VOLUME_CONTENT_CLUSTER)


def template_files_route() -> Route:
    """Template build file uploads (the SDK's `copy`), to the lifecycle's upload server:
    only a path under the upload prefix with the link's query; the server checks the
    signature (the signed link is the credential; the SDK sends no API key)."""
    match = RouteMatch(
        prefix=TEMPLATE_FILES_PREFIX,
        query_parameters=[
            QueryParameterMatcher(name=name, present_match=True) for name in TEMPLATE_FILES_QUERY
        ],
    )
    return _unchecked_stream_route("template-files", match, TEMPLATE_FILES_CLUSTER)


def route_configuration(settings: EnvoySettings) -> RouteConfiguration:
    domain = settings.domain
    shared_routes = [
        sandbox_route(
            f"sandbox-by-{header}",
            RouteMatch(prefix="/", headers=[HeaderMatcher(name=header, present_match=True)]),
        )
        for header in SANDBOX_ROUTING_HEADERS
    ]
    # After the header routes: only a request with neither header gets here.
    signed_files = RouteMatch(
        path="/files",
        query_parameters=[QueryParameterMatcher(name="signature", present_match=True)],
    )
    shared_routes.append(sandbox_route("sandbox-by-signature", signed_files))
    lifecycle_routes = [volume_content_route()] if settings.volume_content is not None else []
    if settings.template_files is not None:
        lifecycle_routes.append(template_files_route())
    return RouteConfiguration(
        name=ROUTE_CONFIG,
        virtual_hosts=[
            VirtualHost(
                name="platform",
                domains=[f"api.{domain}"],
                routes=[*lifecycle_routes, platform_route()],
            ),
            VirtualHost(
                name=SANDBOX_VHOST,
                domains=[f"*.{domain}"],
                routes=[sandbox_route(HOST_FALLBACK_ROUTE)],
            ),
            VirtualHost(
                name=SHARED_VHOST,
                domains=[f"sandbox.{domain}", "*"],
                routes=[*shared_routes, *lifecycle_routes, platform_route()],
            ),
        ],
    )
