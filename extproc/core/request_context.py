"""The request a log line belongs to: Envoy's `x-request-id`, the tenant, the sandbox id.

One `ContextVar` holds it, so whatever a request causes, in the same task or in a task it
starts (asyncio copies the context into new tasks), logs with it and forwards it without
passing it through every call. Envoy makes the id (a UUID, replacing any a client sent:
`use_remote_address`) and sends it on every upstream request and to ext_authz and ext_proc;
the edge forwards it to the lifecycle service as gRPC metadata, and the sandbox's servers
read it from the request's headers.

Setting it costs a `ContextVar.set` (about 0.1 µs); the edge's Check never sets it on an
allowed request, which logs nothing. An id is kept only when it is short printable ASCII
without spaces, so a value from a client that reached a server directly cannot break a text
log line or bloat every line after it.

Standard library only: picod and the interpreter import it at start-up.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping
from contextvars import ContextVar, Token
from typing import NamedTuple

REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID_HEADER_BYTES = REQUEST_ID_HEADER.encode()
# Envoy's are 36 characters; longer ones are not kept.
MAX_REQUEST_ID_LENGTH = 128

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping
    from typing import Any


class RequestContext(NamedTuple):
    """What is known of the request being served; '' where unknown. (A tuple: made in a
    third of the time a frozen dataclass takes.)"""

    request_id: str = ""
    tenant: str = ""
    sandbox_id: str = ""


_CURRENT: ContextVar[RequestContext | None] = ContextVar("agentcube_e2b_request", default=None)


def clean_request_id(value: str | None) -> str:
    """`value` when it is usable as a request id (1-128 printable ASCII, no space), else ''."""
    if (
        not value
        or len(value) > MAX_REQUEST_ID_LENGTH
        or not value.isascii()
        or not value.isprintable()
        or " " in value
    ):
        return ""
    return value


def current_request() -> RequestContext | None:
    return _CURRENT.get()


def current_request_id() -> str:
    context = _CURRENT.get()
    return context.request_id if context is not None else ""


def begin_request(
    request_id: str | None, tenant: str = "", sandbox_id: str = ""
) -> Token[RequestContext | None]:
    """Make this the current request (until `end_request(token)`, or the task's end)."""
    return _CURRENT.set(RequestContext(clean_request_id(request_id), tenant, sandbox_id))


def end_request(token: Token[RequestContext | None]) -> None:
    _CURRENT.reset(token)


def outside_requests() -> contextvars.Context:
    """The current context with no request in it, for a task that a request happens to start
    but that is no part of it (a warm pool refilling for as long as the service runs): pass
    it as `asyncio.create_task(..., context=outside_requests())`, so the task's lines do not
    carry that request's id forever."""
    context = contextvars.copy_context()
    context.run(_CURRENT.set, None)
    return context


def note_request(*, tenant: str | None = None, sandbox_id: str | None = None) -> None:
    """Add what was learnt while serving (the id of a sandbox just created, say) to the
    current request; nothing outside one."""
    context = _CURRENT.get()
    if context is None:
        return
    changes = {
        name: value
        for name, value in (("tenant", tenant), ("sandbox_id", sandbox_id))
        if value is not None
    }
    _CURRENT.set(context._replace(**changes))


@contextlib.contextmanager
def serving_request(headers: Mapping[str, str], sandbox_id: str = "") -> Iterator[None]:
    """Within: the request whose headers are `headers` (lowercase names) is the current one.
    For the edge's Checks that call the lifecycle service, never for the ones that do not."""
    token = begin_request(headers.get(REQUEST_ID_HEADER), sandbox_id=sandbox_id)
    try:
        yield
    finally:
        end_request(token)


class AsgiRequestContext:
    """ASGI middleware: each HTTP request runs as the request its `x-request-id` names.

    The sandbox's servers log nothing per request; this only gives the lines a request does
    cause (a process started, a refused credential, an error) the id Envoy's access log has.
    """

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self._app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        request_id = ""
        for name, value in scope["headers"]:
            if name == _REQUEST_ID_HEADER_BYTES:
                request_id = value.decode("latin-1")
                break
        if not request_id:
            await self._app(scope, receive, send)
            return
        token = begin_request(request_id)
        try:
            await self._app(scope, receive, send)
        finally:
            end_request(token)
