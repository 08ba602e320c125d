"""The edge's one channel to the lifecycle service: how it proves it is the edge.

Locally the channel is a unix socket and every call carries the caller token, added by a
channel interceptor rather than per call, so no lifecycle call of the platform API or the
directory can forget it. The token is read from a 0600 file once, at start-up (`up` writes a
fresh one per run, and restarts the edge with the lifecycle service). The same interceptor
adds the `x-request-id` of the request a call serves (core/request_context.py), so the
lifecycle service logs under the id Envoy's access log has.

In Kubernetes mode the channel is mutual TLS (extproc.k8s.lifecycle_tls): the edge presents
its client certificate and accepts only a server certificate from the lifecycle's own CA. A
target given as an IP address is checked against the certificate's service name instead,
since the edge cannot know which pod IP the certificate would have to list.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from extproc.core.addresses import HostPort
from extproc.core.caller_token import AUTHORIZATION, BEARER, read_token_file
from extproc.core.identity import LIFECYCLE_TLS_NAME, TlsIdentity
from extproc.core.request_context import REQUEST_ID_HEADER, current_request_id

Pairs = tuple[tuple[str, str], ...]


def _with_metadata(details: grpc.aio.ClientCallDetails, pairs: Pairs) -> grpc.aio.ClientCallDetails:
    request_id = current_request_id()
    if request_id:
        pairs = (*pairs, (REQUEST_ID_HEADER, request_id))
    if not pairs:
        return details
    metadata = grpc.aio.Metadata(*(details.metadata or ()), *pairs)
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


class _AddsMetadata:
    def __init__(self, pairs: Pairs) -> None:
        self._pairs = pairs

    async def _call(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return await continuation(_with_metadata(details, self._pairs), request)


# grpc.aio files an interceptor under the first call shape it implements, so each shape the
# edge uses (unary: the platform API, GetSandbox; unary-stream: WatchSandboxes) has its own.
class _UnaryMetadata(_AddsMetadata, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    intercept_unary_unary = _AddsMetadata._call


class _StreamMetadata(_AddsMetadata, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    intercept_unary_stream = _AddsMetadata._call


def is_ip_target(target: str) -> bool:
    """True for `IP:PORT` / `[IPv6]:PORT` (and grpc's `ipv4:` / `ipv6:` schemes)."""
    if target.startswith(("ipv4:", "ipv6:")):
        return True
    try:
        return HostPort.parse(target, port_zero=True).is_ip
    except ValueError:
        return False


def tls_options(target: str) -> list[tuple[str, str]]:
    """Channel options for mutual TLS to `target`: an IP target is verified against the
    lifecycle's service name, which its certificate carries."""
    return [("grpc.ssl_target_name_override", LIFECYCLE_TLS_NAME)] if is_ip_target(target) else []


def lifecycle_channel(
    target: str, token_file: Path | None, tls: TlsIdentity | None = None
) -> grpc.aio.Channel:
    """A channel to `target` (unix:/PATH or HOST:PORT): plaintext, or mutual TLS with `tls`
    (the edge's certificate and the lifecycle's CA); with `token_file`, every call carries
    `authorization: Bearer <token>`; and each call its request's `x-request-id`. ValueError
    when the file is unusable."""
    pairs: Pairs = ()
    if token_file is not None:
        pairs = ((AUTHORIZATION, BEARER + read_token_file(token_file, "--lifecycle-token-file")),)
    interceptors: list[Any] = [_UnaryMetadata(pairs), _StreamMetadata(pairs)]
    if tls is None:
        return grpc.aio.insecure_channel(target, interceptors=interceptors)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=tls.ca_pem, private_key=tls.key_pem, certificate_chain=tls.cert_pem
    )
    return grpc.aio.secure_channel(
        target, credentials, options=tls_options(target), interceptors=interceptors
    )
