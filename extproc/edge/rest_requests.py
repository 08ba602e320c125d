"""E2B request bodies and query strings -> lifecycle requests, validated.

Every problem is an InvalidArgument whose message names the field, so the client gets a 400
JSON it can act on. Types and ranges are checked strictly, as the E2B API's OpenAPI request
validation does (`true` is not a timeout, `"5"` is not a number, every integer is an int32
and a timeout is not negative): tests/platform_spec runs E2B's published spec against this.
Where E2B's Go server is lenient, so is this: a JSON `null` body reads as `{}`, and a lone
UTF-16 surrogate in a JSON string becomes U+FFFD, as Go's decoder does (Python would keep it
and fail later, when it is encoded).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote_plus

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc.core.errors import InvalidArgument, Unimplemented
from extproc.core.json_fields import optional_field

V1_DEFAULT_TIMEOUT_S = 15  # NewSandbox.timeout default in E2B's v1 spec
MAX_LIST_LIMIT = 100
MAX_REFRESH_S = 3600  # SandboxRefreshRequest.duration maximum in E2B's spec
INT32_MAX = 2**31 - 1  # the spec's integers are `format: int32` unless it says int64
INT64_MAX = 2**63 - 1
_LONE_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_IDEMPOTENCY_RE = re.compile(r"[A-Za-z0-9_-]{1,255}")
_STATES = {"running": pb.SANDBOX_STATE_RUNNING, "paused": pb.SANDBOX_STATE_PAUSED}
_ORDERS = {"asc": pb.LIST_ORDER_ASC, "desc": pb.LIST_ORDER_DESC}
# Create fields that need machinery this gateway does not have: (the JSON type the spec
# gives them, that of an array's items, what they ask for). Well-formed and non-empty, each
# is a 501 naming it; malformed, a 400. What lies deeper is never read, so never checked.
_UNSUPPORTED_CREATE: dict[str, tuple[type, type | None, str]] = {
    "mcp": (dict, None, "the MCP gateway"),
    "iam": (dict, None, "IAM tokens"),
}
# network's options other than allowPublicTraffic, typed the same way: all refused (501).
_NETWORK_OPTIONS: dict[str, tuple[type, type | None]] = {
    "allowOut": (list, str),
    "denyOut": (list, str),
    "dnsServers": (list, str),
    "egressProxy": (dict, None),
    "maskRequestHost": (str, None),
    "rules": (dict, None),
}
_JSON_TYPES: dict[type, str] = {dict: "an object", list: "an array", str: "a string"}
_JSON_ITEMS: dict[type, str] = {dict: "objects", str: "strings"}


def _without_lone_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_without_lone_surrogates(item) for item in value]
    if isinstance(value, dict):
        return {_without_lone_surrogates(k): _without_lone_surrogates(v) for k, v in value.items()}
    return value


def json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object; an empty body or `null` is `{}` (pause, connect may send
    none)."""
    if not body.strip():
        return {}
    try:
        value = json.loads(body)
        if _LONE_SURROGATE_ESCAPE.search(body):
            value = _without_lone_surrogates(value)
    # ValueError: not JSON, not UTF-8, or an integer past Python's 4300-digit limit;
    # RecursionError: nested deeper than the parser goes.
    except (ValueError, RecursionError) as error:
        raise InvalidArgument(f"request body is not valid JSON: {error}") from error
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidArgument("request body must be a JSON object")
    return value


def integer_field(body: dict[str, Any], key: str) -> int | None:
    value = optional_field(body, key, int, f"{key} must be an integer")
    if value is not None and not -INT32_MAX - 1 <= value <= INT32_MAX:
        raise InvalidArgument(f"{key} must be a 32-bit integer")
    return value


def boolean_field(body: dict[str, Any], key: str) -> bool | None:
    return optional_field(body, key, bool, f"{key} must be a boolean")


def _string_map(body: dict[str, Any], key: str) -> dict[str, str]:
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise InvalidArgument(f"{key} must be an object of strings")
    return value


def _typed(value: Any, kind: type, items: type | None, name: str) -> None:
    """`value` (not None) is of JSON type `kind`, and its items of `items` when given."""
    if not isinstance(value, kind):
        raise InvalidArgument(f"{name} must be {_JSON_TYPES[kind]}")
    if isinstance(value, list) and items and not all(isinstance(item, items) for item in value):
        raise InvalidArgument(f"{name} must be an array of {_JSON_ITEMS[items]}")


def _refuse_unsupported(body: dict[str, Any]) -> None:
    """501 for a well-formed create field whose feature this gateway lacks; 400 if malformed."""
    for key, (kind, items, what) in _UNSUPPORTED_CREATE.items():
        value = body.get(key)
        if value is not None:
            _typed(value, kind, items, key)
        if key == "iam" and value:
            # Workload identity is on only with a non-empty tokens map (E2B's words).
            value = value.get("tokens")
            if value is not None:
                _typed(value, dict, None, "iam.tokens")
        if value:
            raise Unimplemented(f"{what} is not supported by this gateway")


def _allow_public_traffic(body: dict[str, Any]) -> bool | None:
    """`network.allowPublicTraffic`; every other `network` option this gateway cannot
    enforce (egress lists, DNS, proxies, host masks, rules) is a 501 naming it when sent."""
    network = body.get("network")
    if network is None:
        return None
    if not isinstance(network, dict):
        raise InvalidArgument("network must be an object")
    for key, value in network.items():
        if key in _NETWORK_OPTIONS and value is not None:
            _typed(value, *_NETWORK_OPTIONS[key], f"network.{key}")
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
    if not isinstance(template, str):
        raise InvalidArgument("templateID is required and must be a string")
    if not template:
        raise InvalidArgument("templateID must not be empty")
    _refuse_unsupported(body)
    timeout = integer_field(body, "timeout")
    if timeout is None and not v2:
        timeout = V1_DEFAULT_TIMEOUT_S
    # v2 without a timeout stays unset: the lifecycle applies the template's default
    # (a CodeInterpreter's sessionTimeout in Kubernetes mode, else 300 s, the SDK's meaning).
    if timeout is not None and timeout <= 0:
        raise InvalidArgument("Timeout must be greater than 0")
    auto_resume = body.get("autoResume")
    if auto_resume is not None and not (
        isinstance(auto_resume, dict) and isinstance(auto_resume.get("enabled"), bool)
    ):
        raise InvalidArgument('autoResume must be {"enabled": <boolean>}')
    if idempotency_key is not None and not _IDEMPOTENCY_RE.fullmatch(idempotency_key):
        raise InvalidArgument("Idempotency-Key must be 1-255 characters of [A-Za-z0-9_-]")
    secure = boolean_field(body, "secure")
    public_traffic = _allow_public_traffic(body)
    # false: a pause on timeout keeps only the filesystem, which autoResume cannot wake.
    auto_pause_memory = boolean_field(body, "autoPauseMemory")
    if auto_pause_memory is False and auto_resume and auto_resume.get("enabled"):
        raise InvalidArgument("autoResume cannot be combined with autoPauseMemory: false")
    request = pb.CreateSandboxRequest(
        tenant=tenant,
        template_id=template,
        timeout_seconds=timeout,  # None leaves the optional field unset
        metadata=_string_map(body, "metadata"),
        env_vars=_string_map(body, "envVars"),
        on_timeout=(
            pb.TIMEOUT_ACTION_PAUSE if boolean_field(body, "autoPause") else pb.TIMEOUT_ACTION_KILL
        ),
        auto_resume=bool(auto_resume and auto_resume.get("enabled")),
        # v2 sandboxes are always secured (E2B: "always secured"); v1 only when asked.
        secure=True if v2 else bool(secure),
        allow_internet_access=boolean_field(body, "allow_internet_access") is not False,
        idempotency_key=idempotency_key or "",
        auto_pause_memory=auto_pause_memory,  # None leaves the optional field unset
        volume_mounts=_volume_mounts(body),
    )
    if public_traffic is not None:
        request.allow_public_traffic = public_traffic
    return request


def _volume_mounts(body: dict[str, Any]) -> list[pb.VolumeMount]:
    """E2B's volumeMounts, `[{"name", "path"}]`: typed here, checked by lifecycle."""
    value = body.get("volumeMounts")
    if value is None:
        return []
    _typed(value, list, dict, "volumeMounts")
    mounts = []
    for index, item in enumerate(value):
        name, path = item.get("name"), item.get("path")
        if not isinstance(name, str) or not isinstance(path, str):
            raise InvalidArgument(f"volumeMounts[{index}] needs a string name and path")
        mounts.append(pb.VolumeMount(name=name, path=path))
    return mounts


def pause_request(body: dict[str, Any], sandbox_id: str, tenant: str) -> pb.PauseSandboxRequest:
    """E2B's SandboxPauseRequest: `memory` false keeps only the filesystem. The SDK's
    `requireHealthyGuest` asks to refuse a pause while envd does not answer; a pause here
    never needs envd's help, so it is accepted and changes nothing."""
    boolean_field(body, "requireHealthyGuest")  # type-checked like every other field
    return pb.PauseSandboxRequest(
        sandbox_id=sandbox_id, tenant=tenant, memory=boolean_field(body, "memory")
    )


def timeout_seconds(
    body: dict[str, Any], key: str = "timeout", *, required: bool = False, maximum: int = INT32_MAX
) -> int | None:
    """A number of seconds from 0 to `maximum` (the spec's minimum 0: E2B's validator
    refuses a negative timeout before its handler could clamp it)."""
    value = integer_field(body, key)
    if value is None and required:
        raise InvalidArgument(f"{key} is required")
    if value is not None and not 0 <= value <= maximum:
        raise InvalidArgument(f"{key} must be from 0 to {maximum}")
    return value


def set_timeout_request(
    body: dict[str, Any], sandbox_id: str, tenant: str
) -> pb.SetSandboxTimeoutRequest:
    """E2B's `POST /sandboxes/{id}/timeout`: `timeout` is required."""
    timeout = timeout_seconds(body, required=True)
    return pb.SetSandboxTimeoutRequest(
        sandbox_id=sandbox_id, tenant=tenant, timeout_seconds=timeout
    )


def refresh_request(body: dict[str, Any], sandbox_id: str, tenant: str) -> pb.RefreshSandboxRequest:
    """E2B's SandboxRefreshRequest: an optional `duration` up to an hour."""
    duration = timeout_seconds(body, "duration", maximum=MAX_REFRESH_S)  # None: unset
    return pb.RefreshSandboxRequest(sandbox_id=sandbox_id, tenant=tenant, duration_seconds=duration)


def connect_request(
    body: dict[str, Any], sandbox_id: str, tenant: str, v2: bool
) -> pb.ConnectSandboxRequest:
    """E2B's ConnectSandbox: v1 requires a timeout (every SDK sends one); v2 may leave it out."""
    timeout = timeout_seconds(body, required=not v2)  # None: unset
    return pb.ConnectSandboxRequest(sandbox_id=sandbox_id, tenant=tenant, timeout_seconds=timeout)


def resume_request(body: dict[str, Any], sandbox_id: str, tenant: str) -> pb.ResumeSandboxRequest:
    """E2B's ResumedSandbox: an optional `timeout`."""
    timeout = timeout_seconds(body)  # None: unset
    return pb.ResumeSandboxRequest(sandbox_id=sandbox_id, tenant=tenant, timeout_seconds=timeout)


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


# RFC 3339 `date-time`, the spec's format: a date, a time, an offset (no bare dates).
_DATE_TIME_RE = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})", re.ASCII
)


def _moment(key: str, text: str) -> datetime:
    if not _DATE_TIME_RE.fullmatch(text):
        raise InvalidArgument(f"{key} must be an RFC 3339 timestamp")
    try:
        moment = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    except ValueError as error:  # a month 13, an hour 24
        raise InvalidArgument(f"{key} must be an RFC 3339 timestamp") from error
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # an offset that takes year 1 or 9999 past the range: its end
        return (datetime.max if moment.year > 1 else datetime.min).replace(tzinfo=UTC)


def _page_limit(params: dict[str, list[str]]) -> int | None:
    limit = _one(params, "limit")
    if limit is None:
        return None
    if not (limit.isascii() and limit.isdigit()) or not 1 <= int(limit) <= MAX_LIST_LIMIT:
        raise InvalidArgument(f"limit must be an integer from 1 to {MAX_LIST_LIMIT}")
    return int(limit)


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
        # `state=` is the empty list (form style, explode false): no filter, as in E2B.
        for name in filter(None, value.split(",")):
            if name not in _STATES:
                raise InvalidArgument(f"state must be running or paused, not {name!r}")
            request.states.append(_STATES[name])
    order = _one(params, "order")
    if order is not None:
        if order not in _ORDERS:
            raise InvalidArgument("order must be asc or desc")
        request.order = _ORDERS[order]
    for key, field in (("startedAfter", request.started_after),
                       ("startedBefore", request.started_before)):  # fmt: skip
        text = _one(params, key)
        if text is not None:  # present and empty is not a timestamp either
            field.FromDatetime(_moment(key, text))
    request.template_id = _one(params, "template") or ""
    limit = _page_limit(params)
    if limit is not None:
        request.page_size = limit
    request.page_token = _one(params, "nextToken") or ""
    return request


def check_template_query(query: str) -> None:
    """GET /templates/{id}'s paging of builds: `limit` is validated like a list's; with one
    build per template there is never a next page, so `nextToken` selects nothing."""
    _page_limit(_query(query))


_LAST_TIMESTAMP_S = 253402300799  # 9999-12-31T23:59:59Z


def metrics_request(query: str, sandbox_id: str, tenant: str) -> pb.GetSandboxMetricsRequest:
    params = _query(query)
    request = pb.GetSandboxMetricsRequest(sandbox_id=sandbox_id, tenant=tenant)
    for key, field in (("start", request.start), ("end", request.end)):
        value = _one(params, key)
        if value is None:
            continue
        # The spec's int64 from 0; ASCII digits only (str.isdigit also takes "²"). A moment past
        # protobuf's Timestamp range (year 9999) is the end of that range: no sample is later.
        if not (value.isascii() and value.isdigit()) or int(value) > INT64_MAX:
            raise InvalidArgument(f"{key} must be unix seconds from 0 to {INT64_MAX}")
        field.seconds = min(int(value), _LAST_TIMESTAMP_S)
    return request
