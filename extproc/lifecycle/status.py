"""The one table from domain errors to gRPC status codes for the lifecycle service.

Conflict is FAILED_PRECONDITION (the sandbox or template is in the wrong state: already
paused, template not available); the edge turns it into E2B's 409.
"""

from __future__ import annotations

import grpc

from extproc.core import errors

CODES: dict[type[errors.DomainError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.Conflict: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
}
# A DomainError subclass without a row (none today) is still the caller's problem to see.
DEFAULT_DOMAIN = grpc.StatusCode.UNKNOWN
# Anything else is our bug: INTERNAL, with a message that leaks nothing.
DEFAULT = grpc.StatusCode.INTERNAL
INTERNAL_MESSAGE = "internal error in the lifecycle service; see its log"


def to_status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, errors.DomainError):
        for cls in type(exc).__mro__:
            if cls in CODES:
                return CODES[cls], exc.message
        return DEFAULT_DOMAIN, exc.message
    return DEFAULT, INTERNAL_MESSAGE
