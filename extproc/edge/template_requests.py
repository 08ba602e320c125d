"""E2B's template build, tag and snapshot requests -> lifecycle requests, validated.

Like rest_requests: every problem is an InvalidArgument naming the field (a 400 the SDK
shows as it is); types are checked strictly, as E2B's OpenAPI validation does. Registry
credentials (`fromImageRegistry`) are checked for shape and then dropped: only their kind
travels on, so that the build can say it cannot use them.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc.core.errors import InvalidArgument
from extproc.edge.rest_requests import MAX_LIST_LIMIT, boolean_field, integer_field

MAX_NAME = 128
LOG_LEVELS = ("debug", "info", "warn", "error")
# TemplateBuildStatus: logsOffset from 0, limit 0..100.
MAX_STATUS_LIMIT = 100
_REGISTRY_TYPES = ("registry", "aws", "gcp")


def _string(body: dict[str, Any], key: str, *, required: bool = False) -> str:
    value = body.get(key)
    if value is None:
        if required:
            raise InvalidArgument(f"{key} is required")
        return ""
    if not isinstance(value, str):
        raise InvalidArgument(f"{key} must be a string")
    return value


def _strings(body: dict[str, Any], key: str, *, required: bool = False) -> list[str]:
    value = body.get(key)
    if value is None:
        if required:
            raise InvalidArgument(f"{key} is required")
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"{key} must be an array of strings")
    return value


def _flag(body: dict[str, Any], key: str) -> bool:
    """A boolean field whose absence means false."""
    return boolean_field(body, key) is True


def _count(body: dict[str, Any], key: str, low: int, high: int) -> int:
    value = integer_field(body, key)
    if value is None:
        return 0
    if not low <= value <= high:
        raise InvalidArgument(f"{key} must be from {low} to {high}")
    return value


def build_request(body: dict[str, Any], tenant: str) -> pb.RequestTemplateBuildRequest:
    """E2B's TemplateBuildRequestV3 (`POST /v3/templates`)."""
    name = _string(body, "name") or _string(body, "alias")
    if not name:
        raise InvalidArgument("name is required")
    if len(name) > MAX_NAME:
        raise InvalidArgument(f"name must be at most {MAX_NAME} characters")
    return pb.RequestTemplateBuildRequest(
        tenant=tenant, name=name, tags=_strings(body, "tags"),
        cpu_count=_count(body, "cpuCount", 1, 64),
        memory_mb=_count(body, "memoryMB", 128, 262144),
    )  # fmt: skip


def _step(raw: Any, index: int) -> pb.TemplateBuildStep:
    where = f"steps[{index}]"
    if not isinstance(raw, dict):
        raise InvalidArgument(f"{where} must be an object")
    kind = raw.get("type")
    if not isinstance(kind, str):  # an unknown type fails the build, naming the step
        raise InvalidArgument(f"{where}.type is required and must be a string")
    try:
        return pb.TemplateBuildStep(
            type=kind, args=_strings(raw, "args"), files_hash=_string(raw, "filesHash"),
            force=_flag(raw, "force") or _flag(raw, "forceUpload"),
        )  # fmt: skip
    except InvalidArgument as error:
        raise InvalidArgument(f"{where}.{error.message}") from error


def start_request(
    body: dict[str, Any], tenant: str, template_id: str, build_id: str
) -> pb.StartTemplateBuildRequest:
    """E2B's TemplateBuildStartV2 (`POST /v2/templates/{id}/builds/{buildID}`)."""
    steps = body.get("steps")
    if steps is None:
        steps = []
    if not isinstance(steps, list):
        raise InvalidArgument("steps must be an array")
    registry = body.get("fromImageRegistry")
    registry_type = ""
    if registry is not None:
        if not isinstance(registry, dict) or registry.get("type") not in _REGISTRY_TYPES:
            raise InvalidArgument(
                f"fromImageRegistry must be an object whose type is one of {_REGISTRY_TYPES}"
            )
        registry_type = registry["type"]
    spec = pb.TemplateBuildSpec(
        from_image=_string(body, "fromImage"), from_template=_string(body, "fromTemplate"),
        registry_type=registry_type, force=_flag(body, "force"),
        steps=[_step(s, i) for i, s in enumerate(steps)],
        start_cmd=_string(body, "startCmd"), ready_cmd=_string(body, "readyCmd"),
    )  # fmt: skip
    return pb.StartTemplateBuildRequest(
        tenant=tenant, template_id=template_id, build_id=build_id, spec=spec
    )


def _query(raw: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(raw, keep_blank_values=True).items()}


def _natural(params: dict[str, str], key: str, default: int, high: int) -> int:
    text = params.get(key)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()) or int(text) > high:
        raise InvalidArgument(f"{key} must be an integer from 0 to {high}")
    return int(text)


def _level(params: dict[str, str]) -> str:
    level = params.get("level", "")
    if level and level not in LOG_LEVELS:
        raise InvalidArgument(f"level must be one of {', '.join(LOG_LEVELS)}")
    return level


def status_request(
    query: str, tenant: str, template_id: str, build_id: str
) -> pb.GetTemplateBuildStatusRequest:
    params = _query(query)
    return pb.GetTemplateBuildStatusRequest(
        tenant=tenant, template_id=template_id, build_id=build_id,
        logs_offset=_natural(params, "logsOffset", 0, 2**31 - 1),
        limit=_natural(params, "limit", MAX_STATUS_LIMIT, MAX_STATUS_LIMIT), level=_level(params),
    )  # fmt: skip


def logs_query(query: str) -> tuple[int, int, bool, str]:
    """`GET .../logs`: (cursor in unix ms, limit, backward, level)."""
    params = _query(query)
    direction = params.get("direction", "forward")
    if direction not in ("forward", "backward"):
        raise InvalidArgument("direction must be forward or backward")
    source = params.get("source", "")
    if source not in ("", "temporary", "persistent"):
        raise InvalidArgument("source must be temporary or persistent")
    cursor = _natural(params, "cursor", 0, 2**63 - 1)
    limit = _natural(params, "limit", MAX_STATUS_LIMIT, MAX_STATUS_LIMIT)
    return cursor, limit, direction == "backward", _level(params)


def tags_body(body: dict[str, Any], key: str) -> tuple[str, list[str]]:
    """AssignTemplateTagsRequest (`target`) or DeleteTemplateTagsRequest (`name`)."""
    return _string(body, key, required=True), _strings(body, "tags", required=True)


def public_flag(body: dict[str, Any]) -> bool:
    """TemplateUpdateRequest: `public` (absent: false, a private template)."""
    return _flag(body, "public")


def snapshot_name(body: dict[str, Any]) -> str:
    """SandboxSnapshotRequest's optional `name` (the SDK's mode is memory; see docs)."""
    name = _string(body, "name")
    if len(name) > MAX_NAME:
        raise InvalidArgument(f"name must be at most {MAX_NAME} characters")
    return name


def fork_request(body: dict[str, Any], tenant: str, sandbox_id: str) -> pb.ForkSandboxRequest:
    count = _count(body, "count", 1, 100) or 1
    timeout = integer_field(body, "timeout")
    if timeout is not None and timeout < 0:
        raise InvalidArgument("timeout must be from 0")
    request = pb.ForkSandboxRequest(tenant=tenant, sandbox_id=sandbox_id, count=count)
    if timeout:
        request.timeout_seconds = timeout
    return request


def snapshots_query(query: str, tenant: str) -> tuple[pb.ListSnapshotsRequest, int, int]:
    """`GET /snapshots`: the request, the page size and the offset (`nextToken`)."""
    params = _query(query)
    limit = _natural(params, "limit", MAX_LIST_LIMIT, MAX_LIST_LIMIT)
    if limit < 1:
        raise InvalidArgument(f"limit must be an integer from 1 to {MAX_LIST_LIMIT}")
    token = params.get("nextToken", "")
    if token and not (token.isascii() and token.isdigit()):
        raise InvalidArgument("nextToken is not one this API returned")
    request = pb.ListSnapshotsRequest(
        tenant=tenant, sandbox_id=params.get("sandboxID", ""), name=params.get("name", "")
    )
    return request, limit, int(token or 0)
