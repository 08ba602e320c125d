"""The platform API's path table: which operation a (method, path) names.

One ordered table: the first pattern whose segments match decides, so literal paths that
collide with `{id}` (`/sandboxes/metrics`) come first. A matching pattern without the method
is 405, with the `Allow` header RFC 9110 asks for; a path of a feature this gateway does not
have is 501 naming the feature; anything else is 404. Segments are percent-decoded after
splitting, so an encoded `/` in a template name stays inside its segment.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote


@dataclass(frozen=True, slots=True)
class Operation:
    name: str
    # The first `{id}` segment, when the pattern has one.
    resource_id: str = ""
    # Every `{id}` segment, in order (a build's template and build ids).
    ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NoRoute:
    status: int  # 401 (volume content without its token), 404, 405 or 501
    message: str
    # 405 only: the methods the path has, for the `Allow` header.
    allowed: tuple[str, ...] = ()


# (pattern, {method: operation}); "{id}" is one non-empty segment.
_ID = "{id}"
ROUTES: tuple[tuple[str, dict[str, str]], ...] = (
    ("/health", {"GET": "health"}),
    ("/sandboxes", {"POST": "create_v1", "GET": "list_v1"}),
    ("/v2/sandboxes", {"POST": "create_v2", "GET": "list_v2"}),
    ("/sandboxes/metrics", {"GET": "unsupported:batch sandbox metrics"}),
    ("/sandboxes/{id}", {"GET": "get", "DELETE": "kill"}),
    ("/sandboxes/{id}/timeout", {"POST": "set_timeout"}),
    ("/sandboxes/{id}/refreshes", {"POST": "refresh"}),
    ("/sandboxes/{id}/connect", {"POST": "connect_v1"}),
    ("/v2/sandboxes/{id}/connect", {"POST": "connect_v2"}),
    ("/sandboxes/{id}/pause", {"POST": "pause"}),
    ("/sandboxes/{id}/resume", {"POST": "resume"}),
    ("/sandboxes/{id}/metrics", {"GET": "metrics"}),
    ("/sandboxes/{id}/fork", {"POST": "fork"}),
    ("/sandboxes/{id}/snapshots", {"POST": "create_snapshot"}),
    ("/snapshots", {"GET": "list_snapshots"}),
    ("/sandboxes/{id}/network", {"PUT": "unsupported:updating the sandbox network"}),
    ("/sandboxes/{id}/logs", {"GET": "unsupported:sandbox logs"}),
    ("/v2/sandboxes/{id}/logs", {"GET": "unsupported:sandbox logs"}),
    ("/templates", {"GET": "list_templates", "POST": "unsupported:v1 template builds (use v3)"}),
    ("/v2/templates", {"GET": "list_templates", "POST": "unsupported:v2 template builds (use v3)"}),
    ("/v3/templates", {"POST": "build_template"}),
    ("/templates/default", {"GET": "unsupported:default templates"}),
    ("/templates/tags", {"POST": "tag_template", "DELETE": "untag_template"}),
    ("/templates/aliases/{id}", {"GET": "template_alias"}),
    (
        "/templates/{id}",
        {
            "GET": "get_template",
            "DELETE": "delete_template",
            "PATCH": "update_template",
            "POST": "unsupported:v1 template builds (use v3)",
        },
    ),
    ("/v2/templates/{id}", {"PATCH": "update_template_v2"}),
    ("/templates/{id}/tags", {"GET": "template_tags"}),
    ("/templates/{id}/files/{id}", {"GET": "template_files"}),
    ("/templates/{id}/builds/{id}", {"POST": "unsupported:v1 template builds (use v3)"}),
    ("/v2/templates/{id}/builds/{id}", {"POST": "start_template_build"}),
    ("/templates/{id}/builds/{id}/status", {"GET": "template_build_status"}),
    ("/templates/{id}/builds/{id}/logs", {"GET": "template_build_logs"}),
    ("/volumes", {"GET": "list_volumes", "POST": "create_volume"}),
    ("/volumes/{id}", {"GET": "get_volume", "DELETE": "delete_volume"}),
)
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

_COMPILED = tuple((tuple(pattern.split("/")[1:]), methods) for pattern, methods in ROUTES)
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


def resolve(method: str, path: str) -> Operation | NoRoute:
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
            name = methods.get(method)
            if name is None:
                allowed = tuple(sorted(methods))
                listed = ", ".join(allowed)
                message = f"method {method} is not allowed here (allowed: {listed})"
                return NoRoute(405, message, allowed)
            if name.startswith("unsupported:"):
                return unsupported(name.removeprefix("unsupported:"))
            return Operation(name, ids[0] if ids else "", tuple(ids))
    template = _template_name(method, segments)
    if template is not None:
        return Operation("get_template", template)
    if raw_path.startswith(VOLUME_CONTENT_PREFIX):
        return VOLUME_CONTENT_UNAUTHENTICATED
    for prefix, what in UNSUPPORTED_PREFIXES:
        if raw_path == prefix or raw_path.startswith(prefix.rstrip("/") + "/"):
            return unsupported(what)
    return NoRoute(404, f"no such endpoint: {method} {raw_path}")
