"""core/asgi.py (replies, body reading, the status table), core/daemon_auth.py's
credentials and core/json_fields.py, without a server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from extproc.core import asgi, errors
from extproc.core.daemon_auth import Credentials, credentials
from extproc.core.json_fields import optional_field


def _receiver(*messages: dict[str, Any]) -> asgi.Receive:
    queue = list(messages)

    async def receive() -> asgi.Message:
        return queue.pop(0)

    return receive


def _chunk(body: bytes, more: bool = True) -> dict[str, Any]:
    return {"type": "http.request", "body": body, "more_body": more}


@pytest.mark.parametrize(
    ("messages", "limit", "expected"),
    [
        ([_chunk(b"", more=False)], 0, b""),
        ([_chunk(b"ab"), _chunk(b"cd", more=False)], 4, b"abcd"),
        ([_chunk(b"ab"), _chunk(b"cde", more=False)], 4, asgi.BodyTooLarge),
        ([_chunk(b"abcde")], 4, asgi.BodyTooLarge),  # refused before the body ends
        ([_chunk(b"ab"), {"type": "http.disconnect"}], 4, asgi.ClientDisconnected),
    ],
)
def test_read_body(messages: list[dict[str, Any]], limit: int, expected: object) -> None:
    reading = asgi.read_body(_receiver(*messages), limit)
    if isinstance(expected, bytes):
        assert asyncio.run(reading) == expected
    else:
        assert isinstance(expected, type)
        with pytest.raises(expected):
            asyncio.run(reading)


def test_body_too_large_is_resource_exhausted_saying_the_limit() -> None:
    with pytest.raises(errors.ResourceExhausted, match="larger than 4 bytes"):
        asyncio.run(asgi.read_body(_receiver(_chunk(b"abcde")), 4))


class _Sub(errors.NotFound):
    pass


@pytest.mark.parametrize(
    ("error", "statuses", "expected"),
    [
        (errors.NotFound("x"), asgi.ERROR_STATUS, 404),
        (_Sub("x"), asgi.ERROR_STATUS, 404),  # by its base
        (errors.ResourceExhausted("x"), asgi.ERROR_STATUS, None),  # each surface's own row
        (asgi.BodyTooLarge("x"), {**asgi.ERROR_STATUS, errors.ResourceExhausted: 507}, 507),
        (asgi.BodyTooLarge("x"), {errors.ResourceExhausted: 507, asgi.BodyTooLarge: 413}, 413),
        (RuntimeError("internals"), asgi.ERROR_STATUS, None),
    ],
)
def test_status_for(
    error: BaseException, statuses: dict[type[errors.DomainError], int], expected: int | None
) -> None:
    assert asgi.status_for(error, statuses) == expected


def _sent(coroutine_of_send: Any) -> list[asgi.Message]:
    sent: list[asgi.Message] = []

    async def send(message: asgi.Message) -> None:
        sent.append(message)

    asyncio.run(coroutine_of_send(send))
    return sent


def test_error_reply_is_e2b_json_with_its_length() -> None:
    start, body = _sent(lambda send: asgi.send_error(send, 405, "no", ((b"allow", b"GET"),)))
    assert start["status"] == 405
    headers = dict(start["headers"])
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"allow"] == b"GET"
    assert int(headers[b"content-length"]) == len(body["body"])
    assert json.loads(body["body"]) == {"code": 405, "message": "no"}


def test_no_content_has_no_length() -> None:
    start, body = _sent(lambda send: asgi.respond(send, 204))
    assert start["headers"] == [] and body["body"] == b""


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], Credentials(None, None)),
        ([(b"authorization", b"Bearer abc")], Credentials(b"abc", None)),
        ([(b"authorization", b"bEaReR abc")], Credentials(b"abc", None)),
        ([(b"authorization", b"Basic dXNlcjo=")], Credentials(None, None)),
        ([(b"x-access-token", b"t1"), (b"x-access-token", b"t2")], Credentials(None, b"t2")),
    ],
)
def test_credentials(headers: list[tuple[bytes, bytes]], expected: Credentials) -> None:
    assert credentials(headers) == expected


@pytest.mark.parametrize(
    ("body", "kind", "expected"),
    [
        ({}, int, None),
        ({"k": None}, int, None),
        ({"k": 3}, int, 3),
        ({"k": True}, int, errors.InvalidArgument),  # a boolean is no integer
        ({"k": True}, bool, True),
        ({"k": 1}, bool, errors.InvalidArgument),
        ({"k": "s"}, str, "s"),
        ({"k": ["s"]}, str, errors.InvalidArgument),
    ],
)
def test_optional_field(body: dict[str, Any], kind: type, expected: object) -> None:
    if expected is errors.InvalidArgument:
        with pytest.raises(errors.InvalidArgument, match=r"^k is wrong$"):
            optional_field(body, "k", kind, "k is wrong")
    else:
        assert optional_field(body, "k", kind, "k is wrong") == expected
