"""Envoy's own answers (local replies) in E2B's JSON shape, and the JSON access log.

The E2B SDKs parse every error body as JSON with an integer `code` and a string `message`, and
they key on message substrings ("was not found", "port is not open"). Envoy's own replies are
plain text, so each one the SDK can meet is rewritten here:

- the edge unreachable or failing (fail closed): 503 `{"code":503,"message":...}`;
- a sandbox port that refuses the connection: 502 in the shape of E2B's client-proxy, with the
  sandbox id from the authz verdict, so the SDK raises its "port is not open" error;
- the platform filter (ext_proc) failing or timing out: 500/504 as JSON;
- a path Envoy refuses to normalise (`%00`, an escaped NUL, for one): 400 as JSON, or, under
  `/sandboxes/` and `/v2/sandboxes/`, E2B's 404 for a sandbox id that names no sandbox (so the
  SDK's `Sandbox.kill("sbx%00")` returns False like any unknown id).

Matching is on `response.code_details`, which names the filter that produced the reply, so the
edge's own denials (which already carry E2B JSON) are never rewritten.

A fast route (extproc/edge/xds_routes.py) has no ext_authz verdict to read the sandbox id
from: it is named after its sandbox, always envd's port, and the access log gains a `route`
field, so a line shows which requests took it.
"""

from __future__ import annotations

from envoy_data_plane.envoy.config.accesslog.v3 import (
    AccessLog,
    AccessLogFilter,
    AndFilter,
    ExtensionFilter,
    ResponseFlagFilter,
)
from envoy_data_plane.envoy.config.core.v3 import SubstitutionFormatString
from envoy_data_plane.envoy.extensions.access_loggers.filters.cel.v3 import ExpressionFilter
from envoy_data_plane.envoy.extensions.access_loggers.stream.v3 import StdoutAccessLog
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
    LocalReplyConfig,
    ResponseMapper,
)
from envoy_data_plane.google.protobuf import Any, Struct

from extproc.core.hosts import ENVD_PORT
from extproc.core.xds_contract import FAST_CLUSTER
from extproc.envoy_config.clusters import EXT_AUTHZ_NAMESPACE

_CEL_FILTER = "envoy.access_loggers.extension_filters.cel"
_METADATA = EXT_AUTHZ_NAMESPACE

# The fields of one access log line. Request headers that carry secrets (x-api-key,
# authorization, x-access-token) are never named here, and the path is logged without its
# query string.
ACCESS_LOG_FIELDS = {
    "time": "%START_TIME%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "client": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
    "protocol": "%PROTOCOL%",
    "method": "%REQ(:METHOD)%",
    "authority": "%REQ(:AUTHORITY)%",
    "path": "%PATH(NQ)%",
    "status": "%RESPONSE_CODE%",
    "flags": "%RESPONSE_FLAGS%",
    "details": "%RESPONSE_CODE_DETAILS%",
    "duration_ms": "%DURATION%",
    "bytes_in": "%BYTES_RECEIVED%",
    "bytes_out": "%BYTES_SENT%",
    "upstream_host": "%UPSTREAM_HOST%",
    "sandbox_id": f"%DYNAMIC_METADATA({_METADATA}:sandbox_id)%",
    "tenant": f"%DYNAMIC_METADATA({_METADATA}:tenant)%",
    "authz_us": f"%FILTER_STATE({_METADATA}:FIELD:latency_us)%",
    "user_agent": "%REQ(USER-AGENT)%",
}


def _when(expression: str) -> AccessLogFilter:
    return AccessLogFilter(
        extension_filter=ExtensionFilter(
            name=_CEL_FILTER, typed_config=Any.pack(ExpressionFilter(expression=expression))
        )
    )


def _json(fields: dict[str, object]) -> SubstitutionFormatString:
    return SubstitutionFormatString(json_format=Struct.from_dict(fields))


def _refused_fast_route() -> ResponseMapper:
    """`port_not_open` for a fast route: the sandbox id is the route's name."""
    refused = AccessLogFilter(response_flag_filter=ResponseFlagFilter(flags=["UF"]))
    fast = _when(f"xds.cluster_name == '{FAST_CLUSTER}'")
    return ResponseMapper(
        filter=AccessLogFilter(and_filter=AndFilter(filters=[refused, fast])),
        status_code=502,
        body_format_override=_json(
            {
                "sandboxId": "%ROUTE_NAME%",
                "message": "The sandbox is running but port is not open",
                "port": ENVD_PORT,
                "code": 502,
            }
        ),
    )


def local_reply_config(*, fast_path: bool = False) -> LocalReplyConfig:
    authz_unavailable = ResponseMapper(
        filter=_when("response.code_details == 'ext_authz_error'"),
        status_code=503,
        body_format_override=_json(
            {"code": 503, "message": "The gateway cannot authorize requests right now; retry"}
        ),
    )
    # A refused or timed-out connection to the sandbox address: E2B's client-proxy answer.
    port_not_open = ResponseMapper(
        filter=AccessLogFilter(response_flag_filter=ResponseFlagFilter(flags=["UF"])),
        status_code=502,
        body_format_override=_json(
            {
                "sandboxId": f"%DYNAMIC_METADATA({_METADATA}:sandbox_id)%",
                "message": "The sandbox is running but port is not open",
                "port": f"%DYNAMIC_METADATA({_METADATA}:port)%",
                "code": 502,
            }
        ),
    )
    platform_failed = ResponseMapper(
        filter=_when("response.code_details.startsWith('ext_proc_error')"),
        body_format_override=_json(
            {
                "code": "%RESPONSE_CODE%",
                "message": "The platform API failed: %RESPONSE_CODE_DETAILS%",
            }
        ),
    )
    unnormalisable = "response.code_details == 'path_normalization_failed'"
    under_sandboxes = (
        "(request.path.startsWith('/sandboxes/') || request.path.startsWith('/v2/sandboxes/'))"
    )
    unknown_sandbox = ResponseMapper(
        filter=_when(f"{unnormalisable} && {under_sandboxes}"),
        status_code=404,
        body_format_override=_json({"code": 404, "message": "sandbox not found"}),
    )
    bad_path = ResponseMapper(
        filter=_when(unnormalisable),
        body_format_override=_json(
            {"code": 400, "message": "malformed request path: it cannot be normalised"}
        ),
    )
    fast = [_refused_fast_route()] if fast_path else []
    return LocalReplyConfig(
        mappers=[
            authz_unavailable,
            *fast,
            port_not_open,
            platform_failed,
            unknown_sandbox,
            bad_path,
        ]
    )


def access_log(*, fast_path: bool = False) -> AccessLog:
    fields = {**ACCESS_LOG_FIELDS, "route": "%ROUTE_NAME%"} if fast_path else ACCESS_LOG_FIELDS
    stdout = StdoutAccessLog(log_format=_json(dict(fields)))
    return AccessLog(name="envoy.access_loggers.stdout", typed_config=Any.pack(stdout))
