"""The platform API's wire vocabulary: answers, and the ONE table from errors to HTTP.

Domain errors map to E2B's `{"code","message"}` JSON with the status the SDK expects; gRPC
statuses from lifecycle first become domain errors (a second table), so a handler never
chooses a status by hand for a failure. Anything unmapped is a 500 with a generic message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import grpc

from extproc.core import errors
from extproc.core.asgi import ERROR_STATUS, error_body, json_bytes, status_for

JSON_HEADERS: tuple[tuple[str, str], ...] = (("content-type", "application/json"),)


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = field(default=JSON_HEADERS)


def json_answer(status: int, value: Any, extra: tuple[tuple[str, str], ...] = ()) -> Answer:
    return Answer(status, json_bytes(value), JSON_HEADERS + extra)


def no_content() -> Answer:
    return Answer(204, b"", ())


# Domain error -> HTTP status: the shared table, with a quota or rate limit as 429.
HTTP_STATUS = {**ERROR_STATUS, errors.ResourceExhausted: 429}
DEFAULT_STATUS = 500
DEFAULT_MESSAGE = "internal error"


def error_answer(error: Exception, retryable: bool = True) -> Answer:
    """E2B JSON for `error`; `retryable=False` adds `Should-Retry: false` (non-idempotent op)."""
    status = DEFAULT_STATUS
    message = DEFAULT_MESSAGE
    if isinstance(error, errors.DomainError):
        status = status_for(error, HTTP_STATUS) or DEFAULT_STATUS
        message = error.message
    extra = () if retryable else (("should-retry", "false"),)
    return json_answer(status, error_body(status, message), extra)


# Lifecycle gRPC status -> domain error. Lifecycle's messages are written for callers.
FROM_GRPC: dict[grpc.StatusCode, type[errors.DomainError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: errors.InvalidArgument,
    grpc.StatusCode.NOT_FOUND: errors.NotFound,
    grpc.StatusCode.ALREADY_EXISTS: errors.AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: errors.Conflict,
    grpc.StatusCode.ABORTED: errors.Conflict,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.ResourceExhausted,
    grpc.StatusCode.UNAUTHENTICATED: errors.Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: errors.PermissionDenied,
    grpc.StatusCode.UNIMPLEMENTED: errors.Unimplemented,
    grpc.StatusCode.UNAVAILABLE: errors.Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.DeadlineExceeded,
}


class LifecycleFailed(errors.DomainError):
    """A lifecycle status with no domain meaning (INTERNAL, UNKNOWN, ...): the default row."""


def from_grpc(error: grpc.aio.AioRpcError) -> errors.DomainError:
    kind = FROM_GRPC.get(error.code())
    if kind is None:
        return LifecycleFailed("the lifecycle service failed")
    if kind is errors.Unavailable:
        return kind("the lifecycle service is unavailable")
    return kind(error.details() or kind.__name__)
