"""One log line per lifecycle RPC, under the request id the edge sent.

A grpc.aio server interceptor. Each unary RPC runs as the request its `x-request-id`
metadata names (the edge forwards Envoy's id, core/request_context.py), with the tenant and
sandbox id of its request message, so every line the call causes (a sandbox started, a
failure with its traceback) carries them; when it ends, one line says which RPC it was, its
status and how long it took, with the id of a sandbox it created. Health checks and the
WatchSandboxes stream (one per edge, for as long as the edge runs) are not logged.

grpc.aio interceptors never see the call's context or its request message, so the work is
done by a wrapper around the handler, as `server._guarded` does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from extproc.core.request_context import (
    REQUEST_ID_HEADER,
    begin_request,
    end_request,
    note_request,
)

log = logging.getLogger(__name__)

_UNLOGGED_PREFIX = "/grpc.health.v1.Health/"


def _metadata_value(metadata: Any, key: str) -> str:
    for name, value in metadata or ():
        if name == key:
            return value if isinstance(value, str) else value.decode("latin-1")
    return ""


def _status(context: Any, error: BaseException | None) -> str:
    """The RPC's gRPC status name: what the handler aborted with, else OK or UNKNOWN."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    if isinstance(code, int):  # grpc.aio keeps the raw number once aborted
        for status in grpc.StatusCode:
            if status.value[0] == code:
                return str(status.name)
    return "UNKNOWN" if error is not None else "OK"


def logged(method: str, request_id: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """`handler` (unary-unary) run as its request, and logged when it ends."""
    unary: Callable[..., Awaitable[Any]] = handler.unary_unary
    name = method.rpartition("/")[2]

    async def run(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        started = time.perf_counter()
        token = begin_request(
            request_id,
            tenant=getattr(request, "tenant", ""),
            sandbox_id=getattr(request, "sandbox_id", ""),
        )
        error: BaseException | None = None
        try:
            response = await unary(request, context)
            created = getattr(response, "sandbox", None)
            if created is not None and created.sandbox_id:
                note_request(sandbox_id=created.sandbox_id)
            return response
        except BaseException as raised:
            error = raised
            raise
        finally:
            elapsed_ms = (time.perf_counter() - started) * 1000
            status = _status(context, error)
            log.info(
                "%s %s in %.1f ms",
                name,
                status,
                elapsed_ms,
                extra={"rpc": name, "grpc_status": status},
            )
            end_request(token)

    return grpc.unary_unary_rpc_method_handler(
        run,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class RpcLogging(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc.aio is untyped
    """Outermost interceptor, so a call another interceptor refuses is logged too."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or handler.unary_unary is None or method.startswith(_UNLOGGED_PREFIX):
            return handler
        metadata = handler_call_details.invocation_metadata
        return logged(method, _metadata_value(metadata, REQUEST_ID_HEADER), handler)
