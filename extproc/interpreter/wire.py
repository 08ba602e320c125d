"""The HTTP edge of the interpreter: ASGI request/response helpers and the one table that
maps domain errors to statuses.

Error bodies are E2B's `{"code": <status>, "message": ...}`: the SDK puts the body text in
its exception message, so the message says what was wrong and nothing internal.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from extproc.core import errors

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

ERROR_STATUS: dict[type[errors.DomainError], int] = {
    errors.InvalidArgument: 400,
    errors.Unauthenticated: 401,
    errors.PermissionDenied: 403,
    errors.NotFound: 404,
    errors.AlreadyExists: 409,
    errors.Conflict: 409,
    errors.ResourceExhausted: 413,
    errors.Unimplemented: 501,
    errors.Unavailable: 503,
    errors.DeadlineExceeded: 504,
}
# Anything else is a bug here: 500 with a message that leaks no internals.
DEFAULT_ERROR = (500, "internal error in the code interpreter")


def error_status(error: BaseException) -> tuple[int, str]:
    for kind in type(error).__mro__:
        status = ERROR_STATUS.get(kind)
        if status is not None:
            return status, str(getattr(error, "message", error))
    return DEFAULT_ERROR


async def send_json(send: Send, status: int, body: Any) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


async def send_error(send: Send, error: BaseException) -> None:
    status, message = error_status(error)
    if status == DEFAULT_ERROR[0]:
        log.error("unexpected error", exc_info=error)
    await send_json(send, status, {"code": status, "message": message})


async def send_empty(send: Send, status: int) -> None:
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise errors.InvalidArgument("the client closed the request")
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise errors.ResourceExhausted(f"request body is larger than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def json_object(body: bytes, *, empty_ok: bool = False) -> dict[str, Any]:
    if not body.strip() and empty_ok:
        return {}
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise errors.InvalidArgument(f"request body is not valid JSON: {e}") from e
    if not isinstance(value, dict):
        raise errors.InvalidArgument("request body must be a JSON object")
    return value


def optional_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise errors.InvalidArgument(f"{key!r} must be a string or null")
    return value


def string_map(body: dict[str, Any], key: str) -> dict[str, str]:
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise errors.InvalidArgument(f"{key!r} must be an object of string values or null")
    return value
