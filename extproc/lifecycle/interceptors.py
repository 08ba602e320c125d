"""The shape of the lifecycle service's grpc.aio interceptors, and the metadata they read.

grpc.aio shows a server interceptor the method name and the call's metadata, never the
call's context or its request message; whatever an interceptor does per call is done by the
handler it returns in the method's place. `HandlerInterceptor` is that shape, so each
interceptor (`rpc_logging`, `caller_auth`, `server.PeerCheck`) says only which handler
serves a call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

# grpc.health.v1: probes (up, kubelet, Envoy's health checks) carry no token and are not logged
HEALTH_PREFIX = "/grpc.health.v1.Health/"


def metadata_value(metadata: Any, key: str) -> str | None:
    """The first value of `key` in a call's metadata (binary values decoded as latin-1)."""
    for name, value in metadata or ():
        if name == key:
            return value if isinstance(value, str) else value.decode("latin-1")
    return None


class HandlerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc.aio is untyped
    """An interceptor that hands each call of a served method to `serve`'s handler."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:  # no such method: grpc answers UNIMPLEMENTED
            return None
        method: str = handler_call_details.method
        return self.serve(method, handler_call_details.invocation_metadata, handler)

    def serve(
        self, method: str, metadata: Any, handler: grpc.RpcMethodHandler
    ) -> grpc.RpcMethodHandler:
        """The handler that serves a call of `method` carrying `metadata` in `handler`'s place."""
        raise NotImplementedError
