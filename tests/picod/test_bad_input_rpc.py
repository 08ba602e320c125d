"""Malformed Connect requests against a live picod: right error codes, server keeps serving."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest

if TYPE_CHECKING:
    from conftest import PicodProcess

UNARY = {"Connect-Protocol-Version": "1", "Content-Type": "application/json"}
STREAM = {"Connect-Protocol-Version": "1", "Content-Type": "application/connect+json"}


def envelope(payload: bytes, flags: int = 0) -> bytes:
    return bytes([flags]) + len(payload).to_bytes(4, "big") + payload


def messages(body: bytes) -> Iterator[tuple[int, Any]]:
    while body:
        flags, size = body[0], int.from_bytes(body[1:5], "big")
        yield flags, json.loads(body[5 : 5 + size])
        body = body[5 + size :]


def end_error(body: bytes) -> dict[str, Any]:
    flags, last = list(messages(body))[-1]
    assert flags == 2
    error: dict[str, Any] = last.get("error", {})
    return error


@pytest.fixture
def url(picod_sdk_env: PicodProcess, http: httpx.Client) -> Iterator[str]:
    yield picod_sdk_env.url
    # Whatever the test sent, picod still answers and still runs commands.
    assert http.get(f"{picod_sdk_env.url}/health").status_code == 204
    start = json.dumps({"process": {"cmd": "/bin/echo", "args": ["alive"]}}).encode()
    response = http.post(
        f"{picod_sdk_env.url}/process.Process/Start", content=envelope(start), headers=STREAM
    )
    assert b"YWxpdmUK" in response.content  # base64("alive\n")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "invalid_argument"),
        (b'{"process": {"pid": "abc"}}', "invalid_argument"),
        (b"[]", "invalid_argument"),
        (b'{"process": {}}', "invalid_argument"),
        (b'{"process": {"pid": 4294967295}}', "not_found"),
        (b'{"process": {"tag": "nope"}}', "not_found"),
    ],
)
def test_unary_bad_messages(url: str, body: bytes, code: str, http: httpx.Client) -> None:
    response = http.post(f"{url}/process.Process/CloseStdin", content=body, headers=UNARY)
    assert response.json()["code"] == code
    assert "Traceback" not in response.text


def test_unknown_fields_are_ignored(url: str, http: httpx.Client) -> None:
    response = http.post(
        f"{url}/process.Process/List", content=b'{"fromTheFuture": 1}', headers=UNARY
    )
    assert response.status_code == 200
    assert "processes" in response.json() or response.json() == {}


def test_wrong_content_type_and_unknown_method(url: str, http: httpx.Client) -> None:
    text = {**UNARY, "Content-Type": "text/plain"}
    assert http.post(f"{url}/process.Process/List", content=b"{}", headers=text).status_code == 415
    assert http.post(f"{url}/process.Process/Nope", content=b"{}", headers=UNARY).status_code == 404


def test_oversized_unary_is_resource_exhausted(url: str, http: httpx.Client) -> None:
    big = b'{"x":"' + b"a" * (17 * 1024 * 1024) + b'"}'
    response = http.post(f"{url}/process.Process/List", content=big, headers=UNARY)
    assert response.json()["code"] == "resource_exhausted"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"\x00\x00\x00", "invalid_argument"),  # short header
        (b"\x00\x00\x00\x00\x10{}", "invalid_argument"),  # length > body
        (b"\x00\x7f\xff\xff\xff", "resource_exhausted"),  # length > max
        (envelope(b"{nope"), "invalid_argument"),  # bad JSON inside
        (envelope(b'{"process": {"cmd": ""}}'), "invalid_argument"),  # empty command
        (envelope(b'{"process": {"cmd": "/no/such/binary"}}'), "invalid_argument"),
    ],
)
def test_stream_bad_envelopes(url: str, body: bytes, code: str, http: httpx.Client) -> None:
    response = http.post(f"{url}/process.Process/Start", content=body, headers=STREAM)
    assert response.status_code == 200  # Connect streams report errors in the end message
    assert end_error(response.content)["code"] == code


def test_signals(url: str, http: httpx.Client) -> None:
    start = envelope(json.dumps({"process": {"cmd": "/bin/sleep", "args": ["30"]}}).encode())
    with http.stream(
        "POST", f"{url}/process.Process/Start", content=start, headers=STREAM, timeout=30
    ) as response:
        chunks = response.iter_bytes()
        first = next(chunks)
        pid = next(messages(first))[1]["event"]["start"]["pid"]
        selector = {"process": {"pid": pid}}
        unspecified = http.post(f"{url}/process.Process/SendSignal", json=selector, headers=UNARY)
        assert unspecified.json()["code"] == "invalid_argument"
        term = http.post(
            f"{url}/process.Process/SendSignal",
            json={**selector, "signal": "SIGNAL_SIGTERM"},
            headers=UNARY,
        )
        assert term.status_code == 200
        rest = first[5 + int.from_bytes(first[1:5], "big") :] + b"".join(chunks)
    events = [m for _, m in messages(rest)]
    assert events[-2]["event"]["end"] == {
        "exitCode": -1,
        "status": "signal: terminated",
        "error": "signal: terminated",
    }
    assert events[-1] == {}
    dead = http.post(
        f"{url}/process.Process/SendSignal",
        json={**selector, "signal": "SIGNAL_SIGKILL"},
        headers=UNARY,
    )
    assert dead.json()["code"] == "not_found"


def test_keepalive_and_deadline(url: str, http: httpx.Client) -> None:
    start = envelope(json.dumps({"process": {"cmd": "/bin/sleep", "args": ["5"]}}).encode())
    headers = {**STREAM, "Keepalive-Ping-Interval": "1", "Connect-Timeout-Ms": "1500"}
    response = http.post(f"{url}/process.Process/Start", content=start, headers=headers, timeout=30)
    events = [m for _, m in messages(response.content)]
    assert "start" in events[0]["event"]
    assert {"event": {"keepalive": {}}} in events
    assert events[-1]["error"]["code"] == "deadline_exceeded"


def test_stream_input_must_start_with_start(url: str, http: httpx.Client) -> None:
    data = envelope(json.dumps({"data": {"input": {"stdin": "eA=="}}}).encode())
    response = http.post(f"{url}/process.Process/StreamInput", content=data, headers=STREAM)
    assert end_error(response.content)["code"] == "invalid_argument"
