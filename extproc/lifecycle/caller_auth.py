"""Who may call the lifecycle service, and who may ask about every tenant.

`CallerAuth` is a grpc.aio server interceptor: with a caller token configured
(`--caller-token-file`), every RPC must carry `authorization: Bearer <token>`, compared in
constant time; anything else is UNAUTHENTICATED before a handler runs. grpc.health.v1 stays
open, so readiness probes need no secret and learn nothing but SERVING. Without a token file
(Kubernetes mode, where a NetworkPolicy decides who reaches the service) every caller is let
through.

`may_see_all_tenants` is the servicers' half: an empty tenant means "every tenant" only when
the call says so with `x-agentcube-e2b-scope: all-tenants`. A call that reached a handler has
already passed the interceptor, so it was authenticated or authentication is off.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from typing import Any

import grpc

from extproc.core.caller_token import ALL_TENANTS, AUTHORIZATION, BEARER, SCOPE
from extproc.lifecycle.interceptors import HEALTH_PREFIX, HandlerInterceptor, metadata_value

_DENIED = "the lifecycle service needs `authorization: Bearer <caller token>`"


def may_see_all_tenants(context: grpc.aio.ServicerContext[Any, Any]) -> bool:
    return metadata_value(context.invocation_metadata(), SCOPE) == ALL_TENANTS


async def _deny_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, _DENIED)


async def _deny_stream(
    request: Any, context: grpc.aio.ServicerContext[Any, Any]
) -> AsyncIterator[Any]:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, _DENIED)
    yield  # an async generator, as the streaming handler it stands in for


def _denial(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that only says UNAUTHENTICATED."""
    unary = _deny_unary if not handler.response_streaming else None
    stream = _deny_stream if handler.response_streaming else None
    if handler.request_streaming:
        if stream is not None:
            return grpc.stream_stream_rpc_method_handler(stream)
        return grpc.stream_unary_rpc_method_handler(unary)
    if stream is not None:
        return grpc.unary_stream_rpc_method_handler(stream)
    return grpc.unary_unary_rpc_method_handler(unary)


class CallerAuth(HandlerInterceptor):
    def __init__(self, token: str) -> None:
        self._expected = (BEARER + token).encode("ascii")

    def serve(
        self, method: str, metadata: Any, handler: grpc.RpcMethodHandler
    ) -> grpc.RpcMethodHandler:
        if method.startswith(HEALTH_PREFIX):
            return handler
        given = metadata_value(metadata, AUTHORIZATION) or ""
        if hmac.compare_digest(given.encode("utf-8", "replace"), self._expected):
            return handler
        return _denial(handler)
