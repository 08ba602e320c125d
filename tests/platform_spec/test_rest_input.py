"""The REST layer's parsing, in-process: each fix the spec run asked for, with the inputs that
broke it (a 500 or a wrong 400/200 before), and its neighbours that must keep working."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc.core.errors import InvalidArgument, Unimplemented
from extproc.edge import rest_requests
from extproc.edge.platform import PlatformApi, PlatformRequest
from extproc.edge.rest_routes import NoRoute, resolve


def _create(body: dict[str, Any]) -> pb.CreateSandboxRequest:
    return rest_requests.create_request(body, "default", v2=True, idempotency_key=None)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"", {}),
        (b"null", {}),
        (b'{"a": "x"}', {"a": "x"}),
        # Lone surrogates become U+FFFD (as Go's decoder); a valid pair stays one character.
        (
            rb'{"a": "\ud800", "\udc00": ["\ud83d\ude00"]}',
            {"a": "\ufffd", "\ufffd": ["\U0001f600"]},
        ),
    ],
)
def test_json_object_reads_what_e2b_reads(raw: bytes, expected: dict[str, Any]) -> None:
    assert rest_requests.json_object(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000,  # deeper than the parser goes: was a RecursionError, a 500
        b'{"timeout": ' + b"1" * 5000 + b"}",  # past Python's int digits limit: was a 500
        b"\xff",
        b"{not json",
        b"[1]",
        b"5",
    ],
)
def test_json_object_refuses_with_400(raw: bytes) -> None:
    with pytest.raises(InvalidArgument):
        rest_requests.json_object(raw)


@pytest.mark.parametrize(
    ("value", "ok"),
    [(2**31 - 1, True), (-(2**31), True), (2**31, False), (-(2**31) - 1, False), (1.0, False)],
)
def test_integers_are_int32(value: Any, ok: bool) -> None:
    if ok:
        assert rest_requests.integer_field({"n": value}, "n") == value
    else:
        with pytest.raises(InvalidArgument, match="n must be"):
            rest_requests.integer_field({"n": value}, "n")


def test_timeouts_are_from_zero_to_their_maximum() -> None:
    assert rest_requests.timeout_seconds({"timeout": 0}) == 0
    assert rest_requests.timeout_seconds({}) is None
    with pytest.raises(InvalidArgument, match="timeout is required"):
        rest_requests.timeout_seconds({}, required=True)
    with pytest.raises(InvalidArgument, match="from 0 to"):
        rest_requests.timeout_seconds({"timeout": -1})  # E2B's validator refuses it too
    maximum = rest_requests.MAX_REFRESH_S
    assert rest_requests.timeout_seconds({"d": maximum}, "d", maximum=maximum) == maximum
    with pytest.raises(InvalidArgument, match="d must be from 0 to 3600"):
        rest_requests.timeout_seconds({"d": maximum + 1}, "d", maximum=maximum)


@pytest.mark.parametrize(
    ("body", "error", "fragment"),
    [
        ({"templateID": ""}, InvalidArgument, "templateID must not be empty"),
        ({"templateID": "base", "timeout": 2**31}, InvalidArgument, "32-bit"),
        ({"templateID": "base", "autoResume": {}}, InvalidArgument, "autoResume"),
        ({"templateID": "base", "autoResume": {"enabled": None}}, InvalidArgument, "autoResume"),
        # Malformed options of features this gateway lacks are 400, not the feature's 501.
        ({"templateID": "base", "network": {"allowOut": "1.1.1.1"}}, InvalidArgument, "array"),
        ({"templateID": "base", "network": {"denyOut": [1]}}, InvalidArgument, "strings"),
        ({"templateID": "base", "network": {"maskRequestHost": 5}}, InvalidArgument, "string"),
        ({"templateID": "base", "network": {"egressProxy": []}}, InvalidArgument, "object"),
        ({"templateID": "base", "network": {"allowOut": ["1.1.1.1"]}}, Unimplemented, "allowOut"),
        ({"templateID": "base", "mcp": "x"}, InvalidArgument, "mcp must be an object"),
        ({"templateID": "base", "mcp": {"server": {}}}, Unimplemented, "MCP"),
        ({"templateID": "base", "volumeMounts": {}}, InvalidArgument, "volumeMounts"),
        ({"templateID": "base", "volumeMounts": ["v"]}, InvalidArgument, "array of objects"),
        ({"templateID": "base", "volumeMounts": [{"name": 1}]}, InvalidArgument, r"\[0\]"),
        ({"templateID": "base", "iam": "x"}, InvalidArgument, "iam must be an object"),
        ({"templateID": "base", "iam": {"tokens": 5}}, InvalidArgument, "iam.tokens"),
        ({"templateID": "base", "iam": {"tokens": {"t": {}}}}, Unimplemented, "IAM"),
    ],
)
def test_create_refuses(body: dict[str, Any], error: type[Exception], fragment: str) -> None:
    with pytest.raises(error, match=fragment):
        _create(body)


@pytest.mark.parametrize(
    "extra",
    [
        {"mcp": None},
        {"mcp": {}},
        {"volumeMounts": []},
        {"volumeMounts": [{"name": "v", "path": "/v"}]},  # checked by the lifecycle service
        {"iam": {}},
        {"iam": {"tokens": {}}},  # an empty token map turns nothing on
        {"network": {"allowOut": [], "egressProxy": None}},
        {"autoResume": {"enabled": True}},
    ],
)
def test_create_accepts_what_asks_for_nothing_unsupported(extra: dict[str, Any]) -> None:
    assert _create({"templateID": "base", **extra}).template_id == "base"


@pytest.mark.parametrize(
    "query",
    [
        "startedAfter=",
        "startedAfter=2024-01-02",
        "startedAfter=2024-01-02T03:04:05",  # no offset
        "startedAfter=2024-13-02T03:04:05Z",
        "startedAfter=2024-01-02 03:04:05Z",
        "startedBefore=yesterday",
        "limit=%C2%B2",  # "²" is a digit to str.isdigit
        "state=running,dead",
    ],
)
def test_list_refuses_malformed_queries(query: str) -> None:
    with pytest.raises(InvalidArgument):
        rest_requests.list_request(query, "default", v2=True)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        # An offset that takes the moment past Timestamp's range was an OverflowError, a 500.
        ("9999-12-31T23:59:59-23:59", 253402300799),
        ("0001-01-01T00:00:00%2B23:59", -62135596800),
    ],
)
def test_list_clamps_moments_past_the_timestamp_range(value: str, seconds: int) -> None:
    request = rest_requests.list_request(f"startedBefore={value}", "default", v2=True)
    assert request.started_before.seconds == seconds


def test_list_reads_rfc3339_and_an_empty_state_list() -> None:
    request = rest_requests.list_request(
        "startedAfter=2024-01-02t03:04:05.5z&state=", "default", v2=True
    )
    assert request.started_after.seconds == 1704164645
    assert request.started_after.nanos == 500_000_000
    assert list(request.states) == []  # `state=` is the empty list: no filter


@pytest.mark.parametrize(
    ("query", "start"),
    [
        ("start=0", 0),
        ("start=9223372036854775807", 253402300799),  # int64 max: the end of Timestamp's range
    ],
)
def test_metrics_takes_any_int64_from_zero(query: str, start: int) -> None:
    assert rest_requests.metrics_request(query, "sbx", "default").start.seconds == start


@pytest.mark.parametrize(
    "query", ["start=9223372036854775808", "start=-1", "end=%C2%B2", "end=1.5", "end="]
)
def test_metrics_refuses_what_is_not_an_int64_from_zero(query: str) -> None:
    with pytest.raises(InvalidArgument):
        rest_requests.metrics_request(query, "sbx", "default")


@pytest.mark.parametrize(
    ("query", "ok"),
    [("", True), ("limit=100&nextToken=anything", True), ("limit=0", False), ("limit=x", False)],
)
def test_template_builds_paging_is_validated(query: str, ok: bool) -> None:
    if ok:
        rest_requests.check_template_query(query)
    else:
        with pytest.raises(InvalidArgument, match="limit"):
            rest_requests.check_template_query(query)


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/health", ("health", ())),
        ("GET", "/templates/team/name", ("get_template", ("team/name",))),
        ("GET", "/templates/base", ("get_template", ("base",))),
        ("GET", "/templates/base/builds/b1/status", ("template_build_status", ("base", "b1"))),
        ("GET", "/templates/base/tags", ("template_tags", ("base",))),
        ("GET", "/templates/aliases/name", ("template_alias", ("name",))),
        ("POST", "/templates/team/name", 404),
        ("POST", "/templates/base/builds/b1", 501),
        ("DELETE", "/templates/base/tags", 405),
        ("PUT", "/health", 405),
    ],
)
def test_routes(method: str, path: str, expected: tuple[str, tuple[str, ...]] | int) -> None:
    """`expected`: the operation's name and the path's ids, or the status of no route."""
    call = resolve(method, path)
    if isinstance(expected, tuple):
        assert not isinstance(call, NoRoute)
        assert (call.operation.name, call.ids) == expected
    else:
        assert isinstance(call, NoRoute) and call.status == expected


async def test_405_says_allow_and_health_asks_no_one() -> None:
    # A channel to nowhere: neither answer may need the lifecycle service.
    channel = grpc.aio.insecure_channel("unix:/nonexistent/lifecycle.sock")
    try:
        api = PlatformApi(channel, "e2b.test")
        request = PlatformRequest("TRACE", "/sandboxes/sbx1/timeout", {}, b"", "default")
        _, answer = await api.handle(request)
        assert answer.status == 405
        assert ("allow", "POST") in answer.headers
        assert json.loads(answer.body) == {
            "code": 405,
            "message": "method TRACE is not allowed here (allowed: POST)",
        }
        _, health = await api.handle(PlatformRequest("GET", "/health", {}, b"", "default"))
        assert (health.status, health.body) == (204, b"")
    finally:
        await channel.close()
