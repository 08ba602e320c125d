"""The platform API's operation table: which operation a (method, path) names.

One ordered table of typed rows (platform_operation.Operation): the path template, the method,
the handler, whether a failure may be retried, the lifecycle call's deadline. The router,
the retry policy and the deadlines all read these rows, so an operation is added in one place.
The first pattern whose segments match decides, so literal paths that collide with `{id}`
(`/sandboxes/metrics`) come first. A matching pattern without the method is 405, with the
`Allow` header RFC 9110 asks for; a path of a feature this gateway does not have is 501
naming the feature; anything else is 404. Segments are percent-decoded after splitting, so an
encoded `/` in a template name stays inside its segment.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from extproc.edge import sandbox_api, template_api, volume_api
from extproc.edge.platform_operation import (
    BOOT_DEADLINE_S,
    Call,
    Operation,
    PlatformContext,
    PlatformRequest,
    Unsupported,
)
from extproc.edge.rest_wire import Answer, no_content


@dataclass(frozen=True, slots=True)
class NoRoute:
    status: int  # 401 (volume content without its token), 404, 405 or 501
    message: str
    # 405 only: the methods the path has, for the `Allow` header.
    allowed: tuple[str, ...] = ()


async def _health(context: PlatformContext, request: PlatformRequest, call: Call) -> Answer:
    """E2B's `GET /health`: the API answers (lifecycle is not asked)."""
    return no_content()


_V1_BUILDS = "v1 template builds (use v3)"
# Also what a GET of a name spanning segments resolves to (`_template_name`).
_GET_TEMPLATE = Operation("GET", "/templates/{id}", "get_template", template_api.get_template)
OPERATIONS: tuple[Operation | Unsupported, ...] = (
    Operation("GET", "/health", "health", _health),
    Operation("POST", "/sandboxes", "create_v1", sandbox_api.create, retryable=False,
              deadline_s=BOOT_DEADLINE_S),
    Operation("GET", "/sandboxes", "list_v1", sandbox_api.list_v1),
    Operation("POST", "/v2/sandboxes", "create_v2", sandbox_api.create, retryable=False,
              deadline_s=BOOT_DEADLINE_S),
    Operation("GET", "/v2/sandboxes", "list_v2", sandbox_api.list_v2),
    Unsupported("GET", "/sandboxes/metrics", "batch sandbox metrics"),
    Operation("GET", "/sandboxes/{id}", "get", sandbox_api.get),
    Operation("DELETE", "/sandboxes/{id}", "kill", sandbox_api.kill),
    Operation("POST", "/sandboxes/{id}/timeout", "set_timeout", sandbox_api.set_timeout),
    Operation("POST", "/sandboxes/{id}/refreshes", "refresh", sandbox_api.refresh),
    # Connect may resume a paused sandbox, so it waits as long as a resume.
    Operation("POST", "/sandboxes/{id}/connect", "connect_v1", sandbox_api.connect,
              deadline_s=BOOT_DEADLINE_S),
    Operation("POST", "/v2/sandboxes/{id}/connect", "connect_v2", sandbox_api.connect,
              deadline_s=BOOT_DEADLINE_S),
    # A pause writes the sandbox's memory out, which takes as long as reading it back.
    Operation("POST", "/sandboxes/{id}/pause", "pause", sandbox_api.pause, retryable=False,
              deadline_s=BOOT_DEADLINE_S),
    Operation("POST", "/sandboxes/{id}/resume", "resume", sandbox_api.resume, retryable=False,
              deadline_s=BOOT_DEADLINE_S),
    Operation("GET", "/sandboxes/{id}/metrics", "metrics", sandbox_api.metrics),
    # A fork waits for its sandboxes to start, as a create does; a snapshot, for the pause.
    Operation("POST", "/sandboxes/{id}/fork", "fork", template_api.fork, retryable=False,
              deadline_s=BOOT_DEADLINE_S),
    Operation("POST", "/sandboxes/{id}/snapshots", "create_snapshot",
              template_api.create_snapshot, retryable=False, deadline_s=BOOT_DEADLINE_S),
    Operation("GET", "/snapshots", "list_snapshots", template_api.list_snapshots),
    Unsupported("PUT", "/sandboxes/{id}/network", "updating the sandbox network"),
    Unsupported("GET", "/sandboxes/{id}/logs", "sandbox logs"),
    Unsupported("GET", "/v2/sandboxes/{id}/logs", "sandbox logs"),
    Operation("GET", "/templates", "list_templates", template_api.list_templates),
    Unsupported("POST", "/templates", _V1_BUILDS),
    Operation("GET", "/v2/templates", "list_templates", template_api.list_templates),
    Unsupported("POST", "/v2/templates", "v2 template builds (use v3)"),
    Operation("POST", "/v3/templates", "build_template", template_api.request_build,
              retryable=False),
    Unsupported("GET", "/templates/default", "default templates"),
    Operation("POST", "/templates/tags", "tag_template", template_api.assign_tags),
    Operation("DELETE", "/templates/tags", "untag_template", template_api.remove_tags),
    Operation("GET", "/templates/aliases/{id}", "template_alias", template_api.alias),
    _GET_TEMPLATE,
    Operation("DELETE", "/templates/{id}", "delete_template", template_api.delete),
    Operation("PATCH", "/templates/{id}", "update_template", template_api.update),
    Unsupported("POST", "/templates/{id}", _V1_BUILDS),
    Operation("PATCH", "/v2/templates/{id}", "update_template_v2", template_api.update),
    Operation("GET", "/templates/{id}/tags", "template_tags", template_api.tags),
    Operation("GET", "/templates/{id}/files/{id}", "template_files", template_api.upload_link),
    Unsupported("POST", "/templates/{id}/builds/{id}", _V1_BUILDS),
    Operation("POST", "/v2/templates/{id}/builds/{id}", "start_template_build",
              template_api.start_build, retryable=False),
    Operation("GET", "/templates/{id}/builds/{id}/status", "template_build_status",
              template_api.build_status),
    Operation("GET", "/templates/{id}/builds/{id}/logs", "template_build_logs",
              template_api.build_logs),
    Operation("GET", "/volumes", "list_volumes", volume_api.list_all),
    Operation("POST", "/volumes", "create_volume", volume_api.create, retryable=False),
    Operation("GET", "/volumes/{id}", "get_volume", volume_api.get),
    Operation("DELETE", "/volumes/{id}", "delete_volume", volume_api.delete),
)  # fmt: skip
# Whole feature areas with no operation here: any method, any depth.
UNSUPPORTED_PREFIXES: tuple[tuple[str, str], ...] = (
    ("/teams", "teams"),
    ("/secrets", "secrets"),
    ("/tags", "template tags"),
    ("/access-tokens", "access tokens"),
    ("/api-keys", "API key management (use `agentcube-e2b keys`)"),
    ("/nodes", "cluster nodes"),
    ("/admin", "the admin API"),
)


def _compiled(
    rows: tuple[Operation | Unsupported, ...],
) -> tuple[tuple[tuple[str, ...], dict[str, Operation | Unsupported]], ...]:
    """(segments, {method: row}) per path, in the order the table first names each path."""
    by_path: dict[str, dict[str, Operation | Unsupported]] = {}
    for row in rows:
        methods = by_path.setdefault(row.path, {})
        if row.method in methods:
            raise ValueError(f"{row.method} {row.path} is in the operation table twice")
        methods[row.method] = row
    return tuple((tuple(path.split("/")[1:]), methods) for path, methods in by_path.items())


_ID = "{id}"
_COMPILED = _compiled(OPERATIONS)
# What a segment after /templates/ names when it is not (part of) a template's name.
_TEMPLATE_ENDPOINTS = frozenset({"aliases", "tags", "default"})
_TEMPLATE_PARTS = frozenset({"builds", "files", "tags"})


# Envoy sends a content request with a well-formed volume token to the content server
# (envoy_config/routes.py); one that reaches the platform API had none.
VOLUME_CONTENT_PREFIX = "/volumecontent/"
VOLUME_CONTENT_UNAUTHENTICATED = NoRoute(
    401,
    "the volume content API needs `Authorization: Bearer <the volume's token>` (from "
    "Volume.create or Volume.get_info), on a gateway that serves volume content (local mode)",
)


def unsupported(what: str) -> NoRoute:
    return NoRoute(501, f"{what} is not supported by this gateway")


def _template_name(method: str, segments: list[str]) -> str | None:
    """The name a GET of /templates/{name} asks for when it spans segments. Envoy unescapes a
    client's `%2F` (and reads `\\` as `/`) before the edge sees the path, so the SDK's
    `/templates/team%2Fname` arrives as `/templates/team/name`."""
    if method != "GET" or len(segments) < 3 or segments[0] != "templates":
        return None
    name = segments[1:]
    if name[0] in _TEMPLATE_ENDPOINTS or _TEMPLATE_PARTS & set(name) or not all(name):
        return None
    return "/".join(name)


def resolve(method: str, path: str) -> Call | NoRoute:
    raw_path = path.split("?", 1)[0]
    segments = [unquote(segment) for segment in raw_path.split("/")[1:]]
    for pattern, methods in _COMPILED:
        if len(pattern) != len(segments):
            continue
        ids: list[str] = []
        for want, got in zip(pattern, segments, strict=True):
            if want == _ID:
                if not got:
                    break
                ids.append(got)
            elif want != got:
                break
        else:
            row = methods.get(method)
            if row is None:
                allowed = tuple(sorted(methods))
                listed = ", ".join(allowed)
                message = f"method {method} is not allowed here (allowed: {listed})"
                return NoRoute(405, message, allowed)
            if isinstance(row, Unsupported):
                return unsupported(row.what)
            return Call(row, tuple(ids))
    template = _template_name(method, segments)
    if template is not None:
        return Call(_GET_TEMPLATE, (template,))
    if raw_path.startswith(VOLUME_CONTENT_PREFIX):
        return VOLUME_CONTENT_UNAUTHENTICATED
    for prefix, what in UNSUPPORTED_PREFIXES:
        if raw_path == prefix or raw_path.startswith(prefix.rstrip("/") + "/"):
            return unsupported(what)
    return NoRoute(404, f"no such endpoint: {method} {raw_path}")
