"""How every lifecycle servicer's unary handler is made: the tenant rule, the error mapping,
and the handlers that are one backend call and its answer.

The backends read an empty tenant as "every tenant" (the edge's sandbox directory needs
that), so a handler refuses one with INVALID_ARGUMENT unless the call carries
`x-agentcube-e2b-scope: all-tenants` (`caller_auth`; `unary`); a call that acts for one
tenant (`one_tenant`) refuses it whatever the scope. Every error becomes a status through the
one table in `status`.

A call, once begun, runs to its end even when its caller leaves first (a client timeout, a
reset connection; grpc cancels the handler). Cut off halfway, a Create or a fork would leave
started processes, an address and a root filesystem that no list, quota or expiry knows of,
and a pause or a snapshot a sandbox half stopped; finished, the outcome is the tenant's like
any other (a sandbox counted and expiring on its timeout, which a keyed retry gets). A
stopping server waits for such calls (`settle`) before its backend closes.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import grpc

from extproc.core.errors import DomainError, InvalidArgument, ResourceExhausted
from extproc.lifecycle.caller_auth import may_see_all_tenants
from extproc.lifecycle.status import to_status

log = logging.getLogger(__name__)
R = TypeVar("R")
T = TypeVar("T")
B = TypeVar("B")

# A servicer's method: (the servicer, the request, the context) -> the response.
Handler = Callable[[Any, Any, Any], Awaitable[R]]

# The unary calls of this process still running, their callers there or gone.
_running: set[asyncio.Future[Any]] = set()


async def settle() -> None:
    """Wait for the calls still running; for a server that takes no new ones."""
    await asyncio.gather(*_running, return_exceptions=True)


def _domain(exc: BaseException) -> BaseException:
    """A full disk anywhere below the state directory is the operator's to fix, not our bug."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return ResourceExhausted(
            f"no space left on device ({exc.filename or 'state directory'}); free space and retry"
        )
    return exc


async def abort(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException) -> None:
    if (domain := _domain(exc)) is not exc:
        log.warning("lifecycle RPC failed: %s", exc)
        exc = domain
    code, message = to_status(exc)
    if not isinstance(exc, DomainError):
        log.exception("unexpected error in a lifecycle RPC", exc_info=exc)
    await context.abort(code, message)


def require_all_tenants(context: Any) -> None:
    if not may_see_all_tenants(context):
        raise InvalidArgument(
            "tenant is required: only a caller that sends x-agentcube-e2b-scope: all-tenants "
            "may leave it empty to cover every tenant"
        )


def _handling(handler: Handler[R], one_tenant: bool) -> Handler[R]:
    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: Any) -> R:
        try:
            if not request.tenant:
                if one_tenant:
                    raise InvalidArgument(
                        "tenant is required: this call acts for one tenant, whatever "
                        "x-agentcube-e2b-scope: all-tenants says"
                    )
                require_all_tenants(context)
            call: asyncio.Future[R] = asyncio.ensure_future(handler(self, request, context))
            _running.add(call)
            call.add_done_callback(_running.discard)
            return await asyncio.shield(call)
        except (DomainError, Exception) as exc:
            await abort(context, exc)
            raise  # abort raises; this line is for type checkers

    return wrapper


def unary(handler: Handler[R]) -> Handler[R]:
    """A unary RPC whose empty tenant covers every tenant (for a caller with the scope)."""
    return _handling(handler, one_tenant=False)


def one_tenant(handler: Handler[R]) -> Handler[R]:
    """A unary RPC that acts for one tenant: an empty tenant is refused, scope or not."""
    return _handling(handler, one_tenant=True)


class OneCall(Generic[B]):
    """Makes the handlers of RPCs that are one call of the servicer's backend (a `B`, kept as
    `_backend`) and its answer, so that a servicer says each as one row: the tenant rule
    (`unary` or `one_tenant`), the call (from the backend and the request), the response
    message, and its fields, each made from what the call returned (none: an empty
    response). Generic so that mypy checks each row against B as it would a method body."""

    def answer(
        self,
        rule: Callable[[Handler[Any]], Handler[Any]],
        call: Callable[[B, Any], Awaitable[T]],
        response: Callable[..., Any],
        **fields: Callable[[T], Any],
    ) -> Handler[Any]:
        async def handler(servicer: Any, request: Any, context: Any) -> Any:
            answer = await call(servicer._backend, request)
            return response(**{name: made(answer) for name, made in fields.items()})

        return rule(handler)


def optional(request: Any, name: str) -> int | None:
    """An optional (`HasField`) integer field of `request`, None when absent."""
    return int(getattr(request, name)) if request.HasField(name) else None
