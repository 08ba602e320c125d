"""Tiny stand-ins for the edge and a sandbox, to test the Envoy config on its own.

The edge stand-in keeps the contract (docs/contracts: Envoy <-> edge) with a fixed key, tenant
and sandbox; the real edge is exercised by tests/e2e. The upstream is a raw ASGI app served by
uvicorn: it echoes what reached it, streams chunks, and echoes websocket messages.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2 as authz
from envoy.service.auth.v3 import external_auth_pb2_grpc as authz_grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as extproc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as extproc_grpc
from envoy.type.v3 import http_status_pb2
from google.protobuf import struct_pb2
from google.rpc import status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

GOOD_KEY = "e2b_00112233445566778899aabbccddeeff"
TENANT = "team-a"
SANDBOX_ID = "sbxstandin"
DOMAIN = "e2b.localhost"
_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def _deny(status: int, body: dict[str, Any]) -> authz.CheckResponse:
    return authz.CheckResponse(
        status=status_pb2.Status(code=16 if status == 401 else 5),
        denied_response=authz.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=status),  # type: ignore[arg-type]
            headers=[
                base_pb2.HeaderValueOption(
                    header=base_pb2.HeaderValue(key="content-type", value="application/json"),
                    append_action=_OVERWRITE,
                )
            ],
            body=json.dumps(body),
        ),
    )


class Edge(authz_grpc.AuthorizationServicer, extproc_grpc.ExternalProcessorServicer):
    """Sandbox `sbxstandin` on 127.0.0.1; envd port 49983 maps to `envd_port`."""

    def __init__(self, envd_port: int) -> None:
        self.envd_port = envd_port
        self.checks: list[authz.CheckRequest] = []

    async def Check(self, request: authz.CheckRequest, context: object) -> authz.CheckResponse:
        self.checks.append(request)
        http = request.attributes.request.http
        headers = dict(http.headers)
        surface = request.attributes.context_extensions.get("surface")
        if surface == "platform":
            if headers.get("x-api-key") != GOOD_KEY:
                return _deny(401, {"code": 401, "message": "Invalid API key"})
            return self._ok({"tenant": TENANT})
        if "e2b-sandbox-id" in headers:
            sandbox_id, port = headers["e2b-sandbox-id"], int(headers.get("e2b-sandbox-port", "0"))
        else:
            label = http.host.split(".", 1)[0]
            port_text, _, sandbox_id = label.partition("-")
            port = int(port_text)
        if sandbox_id != SANDBOX_ID:
            body = {"sandboxId": sandbox_id, "message": "The sandbox was not found", "code": 502}
            return _deny(502, body)
        upstream = self.envd_port if port == 49983 else port
        return self._ok(
            {
                "upstream_host": f"127.0.0.1:{upstream}",
                "sandbox_id": sandbox_id,
                "tenant": TENANT,
                "port": port,
            },
            jwt="Bearer standin-jwt",
        )

    @staticmethod
    def _ok(metadata: dict[str, Any], jwt: str | None = None) -> authz.CheckResponse:
        headers = []
        if jwt is not None:
            headers.append(
                base_pb2.HeaderValueOption(
                    header=base_pb2.HeaderValue(key="authorization", value=jwt),
                    append_action=_OVERWRITE,
                )
            )
        dynamic = struct_pb2.Struct()
        dynamic.update(metadata)
        return authz.CheckResponse(
            status=status_pb2.Status(code=0),
            ok_response=authz.OkHttpResponse(headers=headers, headers_to_remove=["x-api-key"]),
            dynamic_metadata=dynamic,
        )

    async def Process(
        self, request_iterator: AsyncIterator[extproc.ProcessingRequest], context: object
    ) -> AsyncIterator[extproc.ProcessingResponse]:
        seen: dict[str, Any] = {}
        async for message in request_iterator:
            if message.HasField("request_headers"):
                names = message.metadata_context.filter_metadata
                tenant = names["envoy.filters.http.ext_authz"]["tenant"]
                pairs = message.request_headers.headers.headers
                seen = {
                    "tenant": tenant,
                    "path": next(h.raw_value.decode() for h in pairs if h.key == ":path"),
                    "spoofed": [h.key for h in pairs if h.key.startswith("x-agentcube")],
                }
                if not message.request_headers.end_of_stream:
                    # Envoy sends the buffered body only after the headers are answered
                    yield extproc.ProcessingResponse(request_headers=extproc.HeadersResponse())
                    continue
            elif message.HasField("request_body"):
                seen["body_bytes"] = len(message.request_body.body)
            yield extproc.ProcessingResponse(
                immediate_response=extproc.ImmediateResponse(
                    status=http_status_pb2.HttpStatus(code=201),  # type: ignore[arg-type]
                    headers=extproc.HeaderMutation(
                        set_headers=[
                            base_pb2.HeaderValueOption(
                                header=base_pb2.HeaderValue(
                                    key="content-type", raw_value=b"application/json"
                                )
                            )
                        ]
                    ),
                    body=json.dumps(seen).encode(),
                )
            )
            return


async def start_edge(edge: Edge, address: str = "127.0.0.1:0") -> tuple[grpc.aio.Server, int]:
    """Serve `edge` on `address` (HOST:PORT, or unix:/PATH as `up` does); returns the port."""
    server = grpc.aio.server()
    authz_grpc.add_AuthorizationServicer_to_server(edge, server)
    extproc_grpc.add_ExternalProcessorServicer_to_server(edge, server)
    health_servicer = health.aio.HealthServicer()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(address)
    await server.start()
    return server, port


async def upstream_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """GET /stream: 4 chunks 0.3 s apart; WS /ws: echo; any other path: the request headers
    as JSON, with the path as it arrived under `:path`."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            event = await receive()
            if event["type"] != "websocket.receive":
                return
            await send({"type": "websocket.send", "text": "echo:" + (event.get("text") or "")})
    headers = {k.decode(): v.decode() for k, v in scope["headers"]}
    start = {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"text/plain")],
    }
    if scope["path"] == "/stream":
        await send(start)
        for index in range(4):
            await send(
                {
                    "type": "http.response.body",
                    "body": f"chunk{index}\n".encode(),
                    "more_body": True,
                }
            )
            await asyncio.sleep(0.3)  # the point: chunks spaced in time
        await send({"type": "http.response.body", "body": b""})
        return
    headers[":path"] = scope["raw_path"].decode()
    await send({**start, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps(headers).encode()})
