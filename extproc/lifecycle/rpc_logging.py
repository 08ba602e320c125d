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
from extproc.lifecycle.interceptors import HEALTH_PREFIX, HandlerInterceptor, metadata_value

log = logging.getLogger(__name__)


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


class RpcLogging(HandlerInterceptor):
    """Outermost interceptor, so a call another interceptor refuses is logged too."""

    def serve(
        self, method: str, metadata: Any, handler: grpc.RpcMethodHandler
    ) -> grpc.RpcMethodHandler:
        if handler.unary_unary is None or method.startswith(HEALTH_PREFIX):
            return handler
        return logged(method, metadata_value(metadata, REQUEST_ID_HEADER) or "", handler)
