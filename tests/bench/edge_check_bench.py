"""CPU microseconds per Authorization.Check, in process (no Envoy, no network).

Builds the edge's servicer over a warm directory (one running sandbox), a loaded key index
and a warm JWT cache, then calls Check N times per case and divides time.process_time by N.
This is the handler's own cost: request parsing, decision, response building, metrics.

    .venv/bin/python tests/bench/edge_check_bench.py [N]
"""

from __future__ import annotations

import asyncio
import base64
import sys
import tempfile
import time
from pathlib import Path
from types import MappingProxyType

from envoy.service.auth.v3 import external_auth_pb2 as auth

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2_grpc as pb_grpc
from extproc.core.api_keys import KeyEntry, KeyIndex, KeyStatus, hash_api_key
from extproc.edge.authz import AuthorizationServicer
from extproc.edge.decision import SandboxDecider
from extproc.edge.metrics import EdgeMetrics
from extproc.edge.sandbox_directory import Directory, Route
from extproc.edge.settings import DirectorySettings, TokenSettings
from extproc.edge.tokens import TokenSigner
from extproc.edge.watching import DirectoryFeed

KEY = "e2b_" + "a" * 40
DOMAIN = "e2b.localhost"


class Keys:
    def __init__(self) -> None:
        key_hash = hash_api_key(KEY)
        entry = KeyEntry(key_hash, KeyStatus.VALID, "default", "bench")
        self.index = KeyIndex(MappingProxyType({key_hash: entry}), "default")


def request(surface: str, host: str, path: str, headers: dict[str, str]) -> bytes:
    check = auth.CheckRequest()
    check.attributes.context_extensions["surface"] = surface
    http = check.attributes.request.http
    http.host, http.path, http.method, http.protocol = host, path, "POST", "HTTP/2"
    base = {
        ":authority": host,
        ":path": path,
        ":method": "POST",
        "user-agent": "connectrpc/0.12.1",
        "accept": "*/*",
        "content-type": "application/connect+json",
        # in Envoy's allowed headers since the logs follow requests (core/request_context.py)
        "x-request-id": "0c23fa93-0383-4e52-82ad-422e55cf1da0",
    }
    http.headers.update({**base, **headers})
    return check.SerializeToString()


async def main(n: int) -> None:
    directory = Directory()
    for i in range(10_000):  # a realistic directory size; lookups are dict gets anyway
        directory.put(
            Route(
                f"sbx{i:06d}",
                f"10.0.{i // 250}.{i % 250}",
                "default",
                pb.SANDBOX_STATE_RUNNING,
                f"tok{i}",
                True,
                time.time() + 3600,
            )
        )
    with tempfile.TemporaryDirectory() as state:
        signer = TokenSigner(TokenSettings(identity_directory=Path(state) / "identity"))
    channel_stub = pb_grpc.SandboxServiceStub.__new__(pb_grpc.SandboxServiceStub)
    feed = DirectoryFeed(channel_stub, directory, DirectorySettings(negative_ttl_s=3600))
    servicer = AuthorizationServicer(
        Keys(), SandboxDecider(directory, DOMAIN), feed, signer, EdgeMetrics()
    )
    basic = "Basic " + base64.b64encode(b"user:").decode()
    cases = {
        "platform allow": request("platform", f"api.{DOMAIN}", "/v2/sandboxes", {"x-api-key": KEY}),
        "platform deny (bad key)": request(
            "platform", f"api.{DOMAIN}", "/v2/sandboxes", {"x-api-key": "e2b_" + "0" * 40}
        ),
        "sandbox allow (host, envd token)": request(
            "sandbox",
            f"49983-sbx000042.{DOMAIN}",
            "/process.Process/Start",
            {"x-access-token": "tok42"},
        ),
        "sandbox allow (headers, basic user)": request(
            "sandbox",
            "localhost:8081",
            "/process.Process/Start",
            {
                "e2b-sandbox-id": "sbx000042",
                "e2b-sandbox-port": "49983",
                "x-access-token": "tok42",
                "authorization": basic,
            },
        ),
        "sandbox deny (502 not found, cached)": request(
            "sandbox", f"49983-sbxmissing.{DOMAIN}", "/health", {}
        ),
    }
    feed._missing["sbxmissing"] = True  # a warm negative cache, as after the first miss
    print(f"edge Check CPU cost, N={n} per case (parse + decide + build + serialize)")
    for name, raw in cases.items():
        for _ in range(200):  # warm caches (JWT, denials)
            servicer_response = await servicer.Check(auth.CheckRequest.FromString(raw), None)
        start = time.process_time()
        for _ in range(n):
            servicer_response = await servicer.Check(auth.CheckRequest.FromString(raw), None)
            servicer_response.SerializeToString()
        per_call = (time.process_time() - start) / n * 1e6
        print(f"  {name:<40} {per_call:7.1f} us/check")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000))
