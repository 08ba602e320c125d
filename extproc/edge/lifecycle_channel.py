"""The edge's one channel to the lifecycle service: how it proves it is the edge.

Locally the channel is a unix socket and every call carries the caller token, added by a
channel interceptor rather than per call, so no lifecycle call of the platform API or the
directory can forget it. The token is read from a 0600 file once, at start-up (`up` writes a
fresh one per run, and restarts the edge with the lifecycle service).

In Kubernetes mode the channel is mutual TLS (extproc.k8s.lifecycle_tls): the edge presents
its client certificate and accepts only a server certificate from the lifecycle's own CA. A
target given as an IP address is checked against the certificate's service name instead,
since the edge cannot know which pod IP the certificate would have to list.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from extproc.core.caller_token import AUTHORIZATION, BEARER, read_token_file
from extproc.core.identity import LIFECYCLE_TLS_NAME, TlsIdentity


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


def is_ip_target(target: str) -> bool:
    """True for `IP:PORT` / `[IPv6]:PORT` (and grpc's `ipv4:` / `ipv6:` schemes)."""
    if target.startswith(("ipv4:", "ipv6:")):
        return True
    host = target.rpartition(":")[0].strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def tls_options(target: str) -> list[tuple[str, str]]:
    """Channel options for mutual TLS to `target`: an IP target is verified against the
    lifecycle's service name, which its certificate carries."""
    return [("grpc.ssl_target_name_override", LIFECYCLE_TLS_NAME)] if is_ip_target(target) else []


def lifecycle_channel(
    target: str, token_file: Path | None, tls: TlsIdentity | None = None
) -> grpc.aio.Channel:
    """A channel to `target` (unix:/PATH or HOST:PORT): plaintext, or mutual TLS with `tls`
    (the edge's certificate and the lifecycle's CA); with `token_file`, every call carries
    `authorization: Bearer <token>`. ValueError when the file is unusable."""
    interceptors: list[Any] = []
    if token_file is not None:
        pair = (AUTHORIZATION, BEARER + read_token_file(token_file, "--lifecycle-token-file"))
        interceptors = [_UnaryToken(pair), _StreamToken(pair)]
    if tls is None:
        return grpc.aio.insecure_channel(target, interceptors=interceptors or None)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=tls.ca_pem, private_key=tls.key_pem, certificate_chain=tls.cert_pem
    )
    return grpc.aio.secure_channel(
        target, credentials, options=tls_options(target), interceptors=interceptors or None
    )
