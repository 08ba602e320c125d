"""`envoy.service.ext_proc.v3.ExternalProcessor`: the platform API behind Envoy.

Per the contract, Envoy sends request headers, then (when the request has a body) the body
BUFFERED in one message, and the edge answers every request with an ImmediateResponse: at the
headers phase when the headers end the stream, otherwise after continuing the headers phase
and reading the body. The tenant comes from the ext_authz dynamic metadata Envoy forwards,
never from a client header; a request without one is refused (ext_authz did not run).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from envoy.config.core.v3 import base_pb2 as core
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc

from extproc.core.request_context import REQUEST_ID_HEADER, begin_request, end_request
from extproc.edge.metrics import EdgeMetrics
from extproc.edge.platform import PlatformApi, PlatformRequest
from extproc.edge.rest_wire import Answer, json_answer

log = logging.getLogger(__name__)

AUTHZ_NAMESPACE = "envoy.filters.http.ext_authz"
EXT_PROC_NAMESPACE = "envoy.filters.http.ext_proc"
# As envoy_config/filters.py's LISTENER_PORT_ATTRIBUTE (the edge imports no Envoy config).
LISTENER_PORT_ATTRIBUTE = "destination.port"
_OVERWRITE = core.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
NO_TENANT = json_answer(401, {"code": 401, "message": "request was not authenticated"})


def _header_text(header: core.HeaderValue) -> str:
    # Envoy fills raw_value (bytes) by default; older configs fill value.
    raw: bytes = header.raw_value
    if raw:
        return raw.decode("utf-8", "replace")
    value: str = header.value
    return value


def immediate(answer: Answer) -> ep.ProcessingResponse:
    response = ep.ProcessingResponse()
    reply = response.immediate_response
    reply.status.code = answer.status
    for key, value in answer.headers:
        option = reply.headers.set_headers.add()
        option.header.key = key
        option.header.raw_value = value.encode()
        option.append_action = _OVERWRITE
    reply.body = answer.body
    return response


def tenant_of(request: ep.ProcessingRequest) -> str:
    metadata = request.metadata_context.filter_metadata
    if AUTHZ_NAMESPACE not in metadata:
        return ""
    fields = metadata[AUTHZ_NAMESPACE].fields
    tenant: str = fields["tenant"].string_value if "tenant" in fields else ""
    return tenant


def _listener_port(request: ep.ProcessingRequest) -> int:
    """The `destination.port` attribute Envoy sends (envoy_config/filters.py); 0 if none."""
    attributes = request.attributes.get(EXT_PROC_NAMESPACE)
    if attributes is None or LISTENER_PORT_ATTRIBUTE not in attributes.fields:
        return 0
    value = attributes.fields[LISTENER_PORT_ATTRIBUTE]
    number: float = value.number_value
    return int(number) if 0 < number < 65536 else 0


class ExternalProcessorServicer(ep_grpc.ExternalProcessorServicer):  # type: ignore[misc]
    def __init__(self, api: PlatformApi, metrics: EdgeMetrics, max_body_bytes: int) -> None:
        self._api = api
        self._metrics = metrics
        self._max_body = max_body_bytes

    async def Process(
        self, request_iterator: AsyncIterator[ep.ProcessingRequest], context: Any
    ) -> AsyncIterator[ep.ProcessingResponse]:
        headers: dict[str, str] | None = None
        tenant = ""
        listener_port = 0
        body = bytearray()
        async for message in request_iterator:
            phase = message.WhichOneof("request")
            if phase == "request_headers":
                headers = {
                    h.key.lower(): _header_text(h) for h in message.request_headers.headers.headers
                }
                tenant = tenant_of(message)
                listener_port = _listener_port(message)
                if not message.request_headers.end_of_stream:
                    yield ep.ProcessingResponse(request_headers=ep.HeadersResponse())
                    continue
            elif phase == "request_body" and headers is not None:
                body += message.request_body.body
                if len(body) > self._max_body:
                    yield immediate(
                        json_answer(413, {"code": 413, "message": "request body is too large"})
                    )
                    return
                if not message.request_body.end_of_stream:
                    yield ep.ProcessingResponse(request_body=ep.BodyResponse())
                    continue
                tenant = tenant or tenant_of(message)
            elif phase == "request_trailers" and headers is not None:
                pass  # a body that ended with trailers: answer now
            else:
                log.warning("ext_proc: unexpected %s message; ignoring the stream", phase)
                return
            yield immediate(await self._answer(headers, bytes(body), tenant, listener_port))
            return

    async def _answer(
        self, headers: dict[str, str], body: bytes, tenant: str, listener_port: int = 0
    ) -> Answer:
        if not tenant:
            self._metrics.platform_requests.labels("none", "401").inc()
            return NO_TENANT
        request = PlatformRequest(
            method=headers.get(":method", "GET").upper(),
            path=headers.get(":path", "/"),
            headers=headers,
            body=body,
            tenant=tenant,
            listener_port=listener_port,
        )
        started = time.perf_counter()
        # The lifecycle calls and log lines this request causes carry Envoy's id.
        context = begin_request(headers.get(REQUEST_ID_HEADER), tenant)
        try:
            operation, answer = await self._api.handle(request)
            elapsed = time.perf_counter() - started
            self._metrics.platform_requests.labels(operation, str(answer.status)).inc()
            self._metrics.platform_seconds.labels(operation).observe(elapsed)
            # One line per platform request: each costs a lifecycle call anyway.
            log.info(
                "platform %s answered %d in %.1f ms",
                operation,
                answer.status,
                elapsed * 1000,
                extra={"operation": operation, "status": answer.status},
            )
        finally:
            end_request(context)
        return answer
