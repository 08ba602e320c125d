"""Transport-free domain errors.

Surfaces raise these; each adapter (Connect, gRPC, E2B JSON) maps them to its wire form in
one table. Chain with `from` where a lower-level error caused one.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base class: `message` is safe to show to the caller."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(DomainError):
    """The request is malformed or a value is out of range."""


class NotFound(DomainError):
    """The thing named does not exist (or belongs to someone else)."""


class AlreadyExists(DomainError):
    """Creating something that is already there."""


class Conflict(DomainError):
    """The thing is in a state that forbids the operation (e.g. already paused)."""


class Unauthenticated(DomainError):
    """Missing or wrong credentials."""


class PermissionDenied(DomainError):
    """Valid credentials that may not do this."""


class ResourceExhausted(DomainError):
    """A limit was hit: too large, too many, no space."""


class Unavailable(DomainError):
    """A dependency is down or not ready; retrying may help."""


class DeadlineExceeded(DomainError):
    """The operation ran out of time."""


class Unimplemented(DomainError):
    """This deployment does not support the operation."""
