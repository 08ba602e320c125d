"""The HTTP vocabulary of the servers written directly on ASGI (picod, the code interpreter,
the lifecycle's volume content API) and of the platform API's answers in the edge.

One place for: the ASGI types, the JSON reply and E2B's `{"code": <status>, "message": ...}`
error body (the SDKs put that message in their exceptions, so it says what was wrong and
nothing internal), reading a request body under a size limit, and the table from domain
errors to HTTP statuses. The statuses differ between surfaces only for ResourceExhausted (a
quota, a body too large, a full disk), so each surface adds that one row to ERROR_STATUS.

Standard library only: picod imports this at start-up, on every sandbox's create path.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from extproc.core import errors

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = tuple[tuple[bytes, bytes], ...]

JSON_TYPE = b"application/json"

ERROR_STATUS: dict[type[errors.DomainError], int] = {
    errors.InvalidArgument: 400,
    errors.Unauthenticated: 401,
    errors.PermissionDenied: 403,
    errors.NotFound: 404,
    errors.AlreadyExists: 409,
    errors.Conflict: 409,
    errors.Unimplemented: 501,
    errors.Unavailable: 503,
    errors.DeadlineExceeded: 504,
}


def status_for(error: BaseException, statuses: dict[type[errors.DomainError], int]) -> int | None:
    """The status of `error`'s most specific class in `statuses`; None: not in the table
    (a bug, for the caller to answer 500 without details)."""
    for kind in type(error).__mro__:
        status = statuses.get(kind)
        if status is not None:
            return status
    return None


def json_bytes(value: Any) -> bytes:
    """`value` as compact JSON, as envd and E2B's API (both Go) write it."""
    return json.dumps(value, separators=(",", ":")).encode()


def error_body(status: int, message: str) -> Any:
    return {"code": status, "message": message}


async def respond(
    send: Send,
    status: int,
    body: bytes = b"",
    content_type: bytes | None = None,
    headers: Headers = (),
) -> None:
    """A whole response in one body message, with its content-length (none on a 204,
    where HTTP forbids one)."""
    head = [*headers] if status == 204 else [(b"content-length", str(len(body)).encode()), *headers]
    if content_type is not None:
        head.append((b"content-type", content_type))
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Send, status: int, value: Any, headers: Headers = ()) -> None:
    await respond(send, status, json_bytes(value), JSON_TYPE, headers)


async def send_error(send: Send, status: int, message: str, headers: Headers = ()) -> None:
    """E2B's error body: `{"code": status, "message": message}`."""
    await send_json(send, status, error_body(status, message), headers)


class ClientDisconnected(ConnectionResetError):
    """The client went away before the request body was complete."""


class BodyTooLarge(errors.ResourceExhausted):
    """The request body exceeds the limit its endpoint takes."""


async def body_chunks(receive: Receive) -> AsyncIterator[bytes]:
    """The request body, one ASGI message at a time; ClientDisconnected when the client
    leaves before its end."""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnected("the client went away mid-request")
        chunk: bytes = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


async def limited(chunks: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    """`chunks`, raising BodyTooLarge once they add up to more than `limit` bytes."""
    total = 0
    async for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise BodyTooLarge(f"request body is larger than {limit} bytes")
        yield chunk


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body: BodyTooLarge past `limit` bytes (nothing more is read),
    ClientDisconnected when the client leaves first."""
    return b"".join([chunk async for chunk in limited(body_chunks(receive), limit)])
