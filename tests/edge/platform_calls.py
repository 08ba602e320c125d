"""One platform API request through an edge's ExternalProcessor, in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator

from envoy.service.ext_proc.v3 import external_processor_pb2 as ep

from extproc.edge.extproc import AUTHZ_NAMESPACE
from extproc.edge.server import Edge


async def platform(
    edge: Edge, method: str, path: str, tenant: str = "default", body: bytes = b""
) -> int:
    """The HTTP status the edge answers `method path` (with `body`, if any) with, as `tenant`."""
    request = ep.ProcessingRequest()
    for key, value in {":method": method, ":path": path, ":authority": "api"}.items():
        header = request.request_headers.headers.headers.add()
        header.key, header.raw_value = key, value.encode()
    request.request_headers.end_of_stream = not body
    fields = request.metadata_context.filter_metadata[AUTHZ_NAMESPACE].fields
    fields["tenant"].string_value = tenant

    async def messages() -> AsyncIterator[ep.ProcessingRequest]:
        yield request
        if body:
            yield ep.ProcessingRequest(request_body=ep.HttpBody(body=body, end_of_stream=True))

    replies = [reply async for reply in edge.processor.Process(messages(), None)]
    return int(replies[-1].immediate_response.status.code)
