"""E2B request bodies and query strings -> lifecycle requests, validated.

Every problem is an InvalidArgument whose message names the field, so the client gets a 400
JSON it can act on. Types are checked strictly (`true` is not a timeout, `"5"` is not a
number), as the E2B API's OpenAPI validation does.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote_plus

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc.core.errors import InvalidArgument, Unimplemented

V1_DEFAULT_TIMEOUT_S = 15  # NewSandbox.timeout default in E2B's v1 spec
V2_DEFAULT_TIMEOUT_S = 300  # what the SDK means by leaving `timeout` out
MAX_LIST_LIMIT = 100
_IDEMPOTENCY_RE = re.compile(r"[A-Za-z0-9_-]{1,255}")
_STATES = {"running": pb.SANDBOX_STATE_RUNNING, "paused": pb.SANDBOX_STATE_PAUSED}
_ORDERS = {"asc": pb.LIST_ORDER_ASC, "desc": pb.LIST_ORDER_DESC}
# Create fields that need machinery this gateway does not have; sent non-empty -> 501.
_UNSUPPORTED_CREATE = {
    "mcp": "the MCP gateway",
    "volumeMounts": "volume mounts",
    "iam": "IAM tokens",
}


def json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object; an empty body is `{}` (pause, connect may send none)."""
    if not body.strip():
        return {}
    try:
        value = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InvalidArgument(f"request body is not valid JSON: {error}") from error
    if not isinstance(value, dict):
        raise InvalidArgument("request body must be a JSON object")
    return value


def integer_field(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{key} must be an integer")
    return value


def _bool(body: dict[str, Any], key: str) -> bool | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise InvalidArgument(f"{key} must be a boolean")
    return value


def _string_map(body: dict[str, Any], key: str) -> dict[str, str]:
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise InvalidArgument(f"{key} must be an object of strings")
    return value


def _allow_public_traffic(body: dict[str, Any]) -> bool | None:
    """`network.allowPublicTraffic`; every other `network` option this gateway cannot
    enforce (egress lists, DNS, proxies, host masks, rules) is a 501 naming it when sent."""
    network = body.get("network")
    if network is None:
        return None
    if not isinstance(network, dict):
        raise InvalidArgument("network must be an object")
    for key, value in network.items():
        # An explicit dnsServers list, even empty, asks for something ("no DNS server").
        if key != "allowPublicTraffic" and (value or (key == "dnsServers" and value is not None)):
            raise Unimplemented(f"network.{key} is not supported by this gateway")
    value = network.get("allowPublicTraffic")
    if value is not None and not isinstance(value, bool):
        raise InvalidArgument("network.allowPublicTraffic must be a boolean")
    return value


def create_request(
    body: dict[str, Any], tenant: str, v2: bool, idempotency_key: str | None
) -> pb.CreateSandboxRequest:
    template = body.get("templateID")
    if not isinstance(template, str) or not template:
        raise InvalidArgument("templateID is required and must be a string")
    for key, what in _UNSUPPORTED_CREATE.items():
        if body.get(key):
            raise Unimplemented(f"{what} is not supported by this gateway")
    timeout = integer_field(body, "timeout")
    if timeout is None:
        timeout = V2_DEFAULT_TIMEOUT_S if v2 else V1_DEFAULT_TIMEOUT_S
    if timeout <= 0:
        raise InvalidArgument("Timeout must be greater than 0")
    auto_resume = body.get("autoResume")
    if auto_resume is not None and not (
        isinstance(auto_resume, dict) and isinstance(auto_resume.get("enabled", False), bool)
    ):
        raise InvalidArgument('autoResume must be {"enabled": <boolean>}')
    if idempotency_key is not None and not _IDEMPOTENCY_RE.fullmatch(idempotency_key):
        raise InvalidArgument("Idempotency-Key must be 1-255 characters of [A-Za-z0-9_-]")
    secure = _bool(body, "secure")
    public_traffic = _allow_public_traffic(body)
    request = pb.CreateSandboxRequest(
        tenant=tenant,
        template_id=template,
        timeout_seconds=timeout,
        metadata=_string_map(body, "metadata"),
        env_vars=_string_map(body, "envVars"),
        on_timeout=pb.TIMEOUT_ACTION_PAUSE if _bool(body, "autoPause") else pb.TIMEOUT_ACTION_KILL,
        auto_resume=bool(auto_resume and auto_resume.get("enabled")),
        # v2 sandboxes are always secured (E2B: "always secured"); v1 only when asked.
        secure=True if v2 else bool(secure),
        allow_internet_access=_bool(body, "allow_internet_access") is not False,
        idempotency_key=idempotency_key or "",
    )
    if public_traffic is not None:
        request.allow_public_traffic = public_traffic
    return request


def timeout_seconds(
    body: dict[str, Any], key: str = "timeout", required: bool = False
) -> int | None:
    value = integer_field(body, key)
    if value is None and required:
        raise InvalidArgument(f"{key} is required")
    if value is not None and value < 0:
        raise InvalidArgument(f"{key} must not be negative")
    return value


def _query(raw: str) -> dict[str, list[str]]:
    return parse_qs(raw, keep_blank_values=True)


def decode_metadata_filter(value: str) -> dict[str, str]:
    """E2B's multi-level metadata filter: the SDK quotes each key and value, urlencodes the
    pairs, and the HTTP client encodes the whole again. `value` has had one level removed
    (the query parser); remove the whole-string level, split, then unquote each part."""
    pairs: dict[str, str] = {}
    for pair in unquote_plus(value).split("&"):
        if not pair:
            continue
        key, sep, item = pair.partition("=")
        if not sep or not key:
            raise InvalidArgument("metadata filter must be key=value pairs joined by '&'")
        pairs[unquote_plus(key)] = unquote_plus(item)
    return pairs


def _one(params: dict[str, list[str]], key: str) -> str | None:
    values = params.get(key)
    return values[-1] if values else None


def _started_after(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as error:
        raise InvalidArgument("startedAfter must be an RFC 3339 timestamp") from error
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


def list_request(query: str, tenant: str, v2: bool) -> pb.ListSandboxesRequest:
    params = _query(query)
    request = pb.ListSandboxesRequest(tenant=tenant)
    metadata = _one(params, "metadata")
    if metadata:
        request.metadata.update(decode_metadata_filter(metadata))
    if not v2:
        # v1 lists running sandboxes only, all of them (the caller pages through lifecycle).
        request.states.append(pb.SANDBOX_STATE_RUNNING)
        return request
    for value in params.get("state", []):
        for name in value.split(","):
            if name not in _STATES:
                raise InvalidArgument(f"state must be running or paused, not {name!r}")
            request.states.append(_STATES[name])
    order = _one(params, "order")
    if order is not None:
        if order not in _ORDERS:
            raise InvalidArgument("order must be asc or desc")
        request.order = _ORDERS[order]
    started_after = _one(params, "startedAfter")
    if started_after:
        request.started_after.FromDatetime(_started_after(started_after))
    request.template_id = _one(params, "template") or ""
    limit = _one(params, "limit")
    if limit is not None:
        if not limit.isdigit() or not 1 <= int(limit) <= MAX_LIST_LIMIT:
            raise InvalidArgument(f"limit must be an integer from 1 to {MAX_LIST_LIMIT}")
        request.page_size = int(limit)
    request.page_token = _one(params, "nextToken") or ""
    return request


def metrics_request(query: str, sandbox_id: str, tenant: str) -> pb.GetSandboxMetricsRequest:
    params = _query(query)
    request = pb.GetSandboxMetricsRequest(sandbox_id=sandbox_id, tenant=tenant)
    for key, field in (("start", request.start), ("end", request.end)):
        value = _one(params, key)
        if value is None:
            continue
        if not value.isdigit():
            raise InvalidArgument(f"{key} must be unix seconds")
        field.seconds = int(value)
    return request
