"""The edge's one channel to the lifecycle service, carrying the caller token on every call.

The token goes in through a channel interceptor rather than per call, so no lifecycle call
of the platform API or the directory can forget it. It is read from a 0600 file once, at
start-up (`up` writes a fresh one per run, and restarts the edge with the lifecycle service).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from extproc.core.caller_token import AUTHORIZATION, BEARER, read_token_file


def _with_token(
    details: grpc.aio.ClientCallDetails, pair: tuple[str, str]
) -> grpc.aio.ClientCallDetails:
    metadata = grpc.aio.Metadata(*(details.metadata or ()), pair)
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


# grpc.aio files an interceptor under the first call shape it implements, so each shape the
# edge uses (unary: the platform API, GetSandbox; unary-stream: WatchSandboxes) has its own.
class _UnaryToken(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self, pair: tuple[str, str]) -> None:
        self._pair = pair

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return await continuation(_with_token(client_call_details, self._pair), request)


class _StreamToken(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    def __init__(self, pair: tuple[str, str]) -> None:
        self._pair = pair

    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return await continuation(_with_token(client_call_details, self._pair), request)


def lifecycle_channel(target: str, token_file: Path | None) -> grpc.aio.Channel:
    """An insecure channel to `target` (unix:/PATH or HOST:PORT); with `token_file`, every
    call carries `authorization: Bearer <token>`. ValueError when the file is unusable."""
    if token_file is None:
        return grpc.aio.insecure_channel(target)
    pair = (AUTHORIZATION, BEARER + read_token_file(token_file, "--lifecycle-token-file"))
    return grpc.aio.insecure_channel(target, interceptors=[_UnaryToken(pair), _StreamToken(pair)])
