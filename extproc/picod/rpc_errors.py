"""Domain and OS errors -> Connect error codes: the one table for both picod services.

Handlers raise transport-free errors (extproc.core.errors) or let OSErrors escape; the
interceptor here turns them into ConnectError with the code envd would use, and anything
unknown into `internal` with a generic message (the real error is logged, never sent).
Two failure kinds never reach an interceptor because connectrpc decodes before calling
handlers, so they are fixed at their source: a codec that reports undecodable JSON as
`invalid_argument` (connectrpc would say `unknown` and echo the parser's text), and a
receive wrapper that reports a truncated envelope (connectrpc drops the partial bytes
and then complains about "zero messages" with `unimplemented`).

Found by the envd fuzz (tests/picod/test_fuzz.py), also fixed at their source: JSON nested
~20000 deep crashed the whole process (the protobuf package's JSON parser overflows the C
stack: a segfault, not an exception), so deep input is refused before it gets there; and a
gzip-flagged message that is not gzip escaped connectrpc as a raw zlib/EOF error (500 or
a dropped stream) instead of `invalid_argument`.
"""

from __future__ import annotations

import errno
import json
import logging
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any, TypeVar

from connectrpc.code import Code
from connectrpc.compression.gzip import GzipCompression
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext
from protobuf import Message

from extproc.core import errors

log = logging.getLogger(__name__)

REQ = TypeVar("REQ")
RES = TypeVar("RES")
M = TypeVar("M", bound=Message)

# Domain error -> Connect code. Order matters only for subclasses (none today).
DOMAIN_CODES: dict[type[errors.DomainError], Code] = {
    errors.InvalidArgument: Code.INVALID_ARGUMENT,
    errors.NotFound: Code.NOT_FOUND,
    errors.AlreadyExists: Code.ALREADY_EXISTS,
    errors.Conflict: Code.FAILED_PRECONDITION,
    errors.Unauthenticated: Code.UNAUTHENTICATED,
    errors.PermissionDenied: Code.PERMISSION_DENIED,
    errors.ResourceExhausted: Code.RESOURCE_EXHAUSTED,
    errors.Unavailable: Code.UNAVAILABLE,
    errors.DeadlineExceeded: Code.DEADLINE_EXCEEDED,
    errors.Unimplemented: Code.UNIMPLEMENTED,
}

# OSError subclass -> Connect code (the filesystem service lets these escape).
OS_ERROR_CODES: dict[type[OSError], Code] = {
    FileNotFoundError: Code.NOT_FOUND,
    FileExistsError: Code.ALREADY_EXISTS,
    PermissionError: Code.PERMISSION_DENIED,
    IsADirectoryError: Code.INVALID_ARGUMENT,
    NotADirectoryError: Code.INVALID_ARGUMENT,
}

# errno values with no OSError subclass of their own.
ERRNO_CODES: dict[int, Code] = {
    errno.ENOSPC: Code.RESOURCE_EXHAUSTED,
    errno.EDQUOT: Code.RESOURCE_EXHAUSTED,
    errno.ENAMETOOLONG: Code.INVALID_ARGUMENT,
    errno.EINVAL: Code.INVALID_ARGUMENT,  # e.g. moving a directory into itself
    errno.ELOOP: Code.INVALID_ARGUMENT,
    errno.EROFS: Code.PERMISSION_DENIED,
}

INTERNAL_MESSAGE = "internal error"


def to_connect_error(exc: BaseException) -> ConnectError:
    """The ConnectError a handler's exception becomes on the wire."""
    if isinstance(exc, ConnectError):
        return exc
    if isinstance(exc, errors.DomainError):
        for kind, code in DOMAIN_CODES.items():
            if isinstance(exc, kind):
                return ConnectError(code, exc.message)
    if isinstance(exc, OSError):
        os_code = _os_error_code(exc)
        if os_code is not None:
            # strerror + filename is what the caller named; never a traceback.
            detail = exc.strerror or type(exc).__name__
            where = f": {exc.filename}" if exc.filename else ""
            return ConnectError(os_code, f"{detail}{where}")
    log.error("unhandled error in RPC handler", exc_info=exc)
    return ConnectError(Code.INTERNAL, INTERNAL_MESSAGE)


def _os_error_code(exc: OSError) -> Code | None:
    for kind, code in OS_ERROR_CODES.items():
        if isinstance(exc, kind):
            return code
    return ERRNO_CODES.get(exc.errno or 0)


async def _mapping_errors(
    call_next: Callable[[REQ, RequestContext[Any, Any]], Awaitable[RES]],
    request: REQ,
    ctx: RequestContext[Any, Any],
) -> RES:
    """One unary-response call, its exception turned into the ConnectError it becomes."""
    try:
        return await call_next(request, ctx)
    except ConnectError:
        raise
    except Exception as e:
        raise to_connect_error(e) from e


class ErrorMappingInterceptor:
    """Applies `to_connect_error` to unary, client-stream and server-stream handlers."""

    async def intercept_unary(
        self,
        call_next: Callable[[REQ, RequestContext[Any, Any]], Awaitable[RES]],
        request: REQ,
        ctx: RequestContext[Any, Any],
        /,
    ) -> RES:
        return await _mapping_errors(call_next, request, ctx)

    async def intercept_client_stream(
        self,
        call_next: Callable[[AsyncIterator[REQ], RequestContext[Any, Any]], Awaitable[RES]],
        request: AsyncIterator[REQ],
        ctx: RequestContext[Any, Any],
        /,
    ) -> RES:
        return await _mapping_errors(call_next, request, ctx)

    async def intercept_server_stream(
        self,
        call_next: Callable[[REQ, RequestContext[Any, Any]], AsyncIterator[RES]],
        request: REQ,
        ctx: RequestContext[Any, Any],
        /,
    ) -> AsyncIterator[RES]:
        stream = call_next(request, ctx)
        try:
            async for message in stream:
                yield message
        except ConnectError:
            raise
        except Exception as e:
            raise to_connect_error(e) from e
        finally:
            # Close the handler's generator now, not at GC: its finally blocks
            # unsubscribe from process output.
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()


# Deepest JSON nesting handed to the protobuf parser; envd's messages nest 5 deep. More
# brackets than this in a body makes the codec check the depth with the stdlib parser,
# which raises RecursionError (about 1000 deep) where the protobuf one would crash.
JSON_DEPTH_CHECK_ABOVE = 64


def _refuse_deep_json(data: bytes | bytearray) -> None:
    if data.count(b"[") + data.count(b"{") <= JSON_DEPTH_CHECK_ABOVE:
        return
    try:
        json.loads(data)
    except RecursionError as e:
        raise ConnectError(Code.INVALID_ARGUMENT, "JSON nested too deeply") from e
    except ValueError:
        pass  # not JSON at all: the protobuf parser reports that as usual


class StrictJSONCodec:
    """Proto3 JSON, reporting undecodable input as invalid_argument.

    Unknown fields are ignored, as connect-go's envd and the SDK's own codec do: a newer
    SDK may send fields this picod does not know, and refusing them would break it.
    """

    def name(self) -> str:
        return "json"

    def encode(self, message: Message) -> bytes:
        return message.to_json().encode()

    def decode(self, data: bytes | bytearray, message_class: type[M]) -> M:
        _refuse_deep_json(data)
        try:
            return message_class.from_json(data, ignore_unknown_fields=True)
        except Exception as e:
            raise ConnectError(
                Code.INVALID_ARGUMENT, f"cannot decode {message_class.__name__} from JSON"
            ) from e


class StrictBinaryCodec:
    """connectrpc's binary codec with the same invalid_argument reporting."""

    def name(self) -> str:
        return "proto"

    def encode(self, message: Message) -> bytes:
        return message.to_binary()

    def decode(self, data: bytes | bytearray, message_class: type[M]) -> M:
        try:
            return message_class.from_binary(data)
        except Exception as e:
            raise ConnectError(
                Code.INVALID_ARGUMENT, f"cannot decode {message_class.__name__} from protobuf"
            ) from e


def codecs() -> list[Any]:
    return [StrictBinaryCodec(), StrictJSONCodec()]


class StrictGzipCompression(GzipCompression):
    """connectrpc's gzip, reporting a body that does not inflate as invalid_argument."""

    def decompress(
        self, data: bytes | bytearray | memoryview, read_max_bytes: int | None = None
    ) -> bytes:
        try:
            return super().decompress(data, read_max_bytes)
        except (zlib.error, EOFError) as e:
            raise ConnectError(Code.INVALID_ARGUMENT, "cannot decompress gzip message") from e


def compressions() -> list[Any]:
    return [StrictGzipCompression()]


Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


def guard_envelopes(receive: Receive, read_max_bytes: int) -> Receive:
    """Wrap a streaming request's `receive` to reject a body that ends mid-envelope.

    Tracks envelope boundaries as chunks pass (5-byte header: flags, big-endian length);
    the final chunk must end exactly on one. Raising ConnectError from receive ends the
    stream with that error through connectrpc's own stream error path.
    """
    header = bytearray()
    remaining = 0  # payload bytes still owed by the current envelope

    async def guarded() -> MutableMapping[str, Any]:
        nonlocal remaining
        message = await receive()
        if message["type"] != "http.request":
            return message
        view = memoryview(message.get("body", b""))
        while view:
            if remaining:
                taken = min(remaining, len(view))
                remaining -= taken
                view = view[taken:]
                continue
            need = 5 - len(header)
            header.extend(view[:need])
            view = view[need:]
            if len(header) == 5:
                remaining = int.from_bytes(header[1:5], "big")
                header.clear()
        # An envelope over the limit is connectrpc's to refuse (resource_exhausted).
        if not message.get("more_body", False) and (header or 0 < remaining <= read_max_bytes):
            raise ConnectError(Code.INVALID_ARGUMENT, "protocol error: incomplete envelope")
        return message

    return guarded
