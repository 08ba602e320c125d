"""ExternalProcessor.Process: the E2B platform API over gRPC against the fake lifecycle."""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import grpc
import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc.edge.extproc import AUTHZ_NAMESPACE

from .conftest import DOMAIN
from .fake_lifecycle import FakeLifecycle, make_sandbox


class Reply:
    def __init__(self, responses: list[ep.ProcessingResponse]) -> None:
        final = responses[-1]
        assert final.WhichOneof("response") == "immediate_response"
        self.phases = [r.WhichOneof("response") for r in responses]
        immediate = final.immediate_response
        self.status = immediate.status.code
        self.headers = {
            h.header.key: h.header.raw_value.decode() for h in immediate.headers.set_headers
        }
        self.raw = immediate.body

    def json(self) -> Any:
        assert self.headers["content-type"] == "application/json"
        return json.loads(self.raw)


async def call(
    channel: grpc.aio.Channel,
    method: str,
    path: str,
    body: Any = None,
    tenant: str | None = "default",
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> Reply:
    payload = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
    first = ep.ProcessingRequest()
    request_headers = first.request_headers
    for key, value in {
        ":method": method,
        ":path": path,
        ":authority": f"api.{DOMAIN}",
        **(headers or {}),
    }.items():
        header = request_headers.headers.headers.add()
        header.key = key
        header.raw_value = value.encode()
    request_headers.end_of_stream = not payload
    if tenant is not None:
        first.metadata_context.filter_metadata[AUTHZ_NAMESPACE].fields[
            "tenant"
        ].string_value = tenant
    messages = [first]
    if payload:
        messages.append(
            ep.ProcessingRequest(request_body=ep.HttpBody(body=payload, end_of_stream=True))
        )
    stub = ep_grpc.ExternalProcessorStub(channel)
    stream = stub.Process()
    responses: list[ep.ProcessingResponse] = []
    for message in messages:
        await stream.write(message)
        response = await stream.read()
        responses.append(response)
        if response.WhichOneof("response") == "immediate_response":
            break
    await stream.done_writing()
    return Reply(responses)


SANDBOX_KEYS = {"templateID", "sandboxID", "clientID", "envdVersion", "envdAccessToken", "domain"}
DETAIL_KEYS = {
    "templateID",
    "sandboxID",
    "clientID",
    "startedAt",
    "endAt",
    "envdVersion",
    "cpuCount",
    "memoryMB",
    "diskSizeMB",
    "state",
}


async def test_create_v2_defaults_and_shape(
    channel: grpc.aio.Channel, fake: tuple[FakeLifecycle, str]
) -> None:
    reply = await call(
        channel,
        "POST",
        "/v2/sandboxes",
        {"templateID": "base", "metadata": {"k": "v"}, "envVars": {}},
    )
    assert reply.phases == ["request_headers", "immediate_response"]
    assert reply.status == 201
    body = reply.json()
    assert set(body) >= SANDBOX_KEYS
    assert body["clientID"] == "6532622b" and body["domain"] == DOMAIN
    create = [r for name, r in fake[0].calls if name == "CreateSandbox"][-1]
    # No timeout sent: left unset, for the lifecycle to apply the template's default.
    assert not create.HasField("timeout_seconds")
    assert create.secure and create.tenant == "default"
    assert dict(create.metadata) == {"k": "v"}


async def test_create_v1_defaults_to_15_seconds_and_insecure(
    channel: grpc.aio.Channel, fake: tuple[FakeLifecycle, str]
) -> None:
    reply = await call(channel, "POST", "/sandboxes", {"templateID": "base"})
    assert reply.status == 201 and "envdAccessToken" not in reply.json()
    create = [r for name, r in fake[0].calls if name == "CreateSandbox"][-1]
    assert create.timeout_seconds == 15 and not create.secure


async def test_create_passes_lifecycle_options(
    channel: grpc.aio.Channel, fake: tuple[FakeLifecycle, str]
) -> None:
    body = {
        "templateID": "base",
        "timeout": 60,
        "autoPause": True,
        "autoResume": {"enabled": True},
        "allow_internet_access": False,
        "secure": True,
    }
    reply = await call(channel, "POST", "/sandboxes", body, headers={"idempotency-key": "abc-1"})
    assert reply.status == 201
    create = [r for name, r in fake[0].calls if name == "CreateSandbox"][-1]
    assert create.timeout_seconds == 60 and create.on_timeout == pb.TIMEOUT_ACTION_PAUSE
    assert create.auto_resume and not create.allow_internet_access and create.secure
    assert create.idempotency_key == "abc-1"


@pytest.mark.parametrize(
    ("raw", "status", "fragment"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[1,2]", 400, "JSON object"),
        (b"{}", 400, "templateID is required"),
        (b'{"templateID": 5}', 400, "templateID"),
        (b'{"templateID": "base", "timeout": "5"}', 400, "timeout must be an integer"),
        (b'{"templateID": "base", "timeout": true}', 400, "timeout must be an integer"),
        (b'{"templateID": "base", "timeout": 0}', 400, "Timeout must be greater than 0"),
        (b'{"templateID": "base", "metadata": {"a": 1}}', 400, "metadata"),
        (b'{"templateID": "base", "envVars": []}', 400, "envVars"),
        (b'{"templateID": "base", "autoPause": "yes"}', 400, "autoPause"),
        (b'{"templateID": "base", "autoResume": true}', 400, "autoResume"),
        (b'{"templateID": "base", "volumeMounts": [{"name": "v"}]}', 400, "volumeMounts[0]"),
        (b'{"templateID": "base", "network": {"allowOut": ["1.1.1.1"]}}', 501, "network.allowOut"),
        (b'{"templateID": "base", "network": {"denyOut": ["0.0.0.0/0"]}}', 501, "network.denyOut"),
        (b'{"templateID": "base", "network": {"dnsServers": []}}', 501, "network.dnsServers"),
        (b'{"templateID": "base", "network": {"maskRequestHost": "x"}}', 501, "maskRequestHost"),
        (b'{"templateID": "base", "network": []}', 400, "network must be an object"),
        (b'{"templateID": "base", "network": {"allowPublicTraffic": 0}}', 400, "boolean"),
        (b'{"templateID": "nope"}', 404, "template"),
    ],
)
async def test_create_rejects_bad_input(
    channel: grpc.aio.Channel, raw: bytes, status: int, fragment: str
) -> None:
    reply = await call(channel, "POST", "/v2/sandboxes", raw=raw)
    assert reply.status == status
    body = reply.json()
    assert body["code"] == status and fragment in body["message"]
    assert reply.headers.get("should-retry") == "false"  # create is not idempotent


async def test_create_without_public_traffic_returns_the_traffic_token(
    channel: grpc.aio.Channel, fake: tuple[FakeLifecycle, str]
) -> None:
    network = {"allowPublicTraffic": False, "allowOut": [], "denyOut": None}
    reply = await call(channel, "POST", "/v2/sandboxes", {"templateID": "base", "network": network})
    assert reply.status == 201
    body = reply.json()
    assert body["trafficAccessToken"] == "traffic-" + body["sandboxID"]
    create = [r for name, r in fake[0].calls if name == "CreateSandbox"][-1]
    assert create.HasField("allow_public_traffic") and not create.allow_public_traffic
    detail = (await call(channel, "GET", "/sandboxes/" + body["sandboxID"])).json()
    assert detail["network"] == {"allowPublicTraffic": False}


@pytest.mark.parametrize("network", [None, {}, {"allowPublicTraffic": True}])
async def test_public_traffic_has_a_null_traffic_token(
    channel: grpc.aio.Channel, fake: tuple[FakeLifecycle, str], network: object
) -> None:
    reply = await call(channel, "POST", "/v2/sandboxes", {"templateID": "base", "network": network})
    assert reply.status == 201
    body = reply.json()
    assert "trafficAccessToken" in body and body["trafficAccessToken"] is None
    create = [r for name, r in fake[0].calls if name == "CreateSandbox"][-1]
    assert not create.HasField("allow_public_traffic") or create.allow_public_traffic
    detail = (await call(channel, "GET", "/sandboxes/" + body["sandboxID"])).json()
    assert detail["network"] == {"allowPublicTraffic": True}


async def test_bad_idempotency_key(channel: grpc.aio.Channel) -> None:
    reply = await call(
        channel,
        "POST",
        "/v2/sandboxes",
        {"templateID": "base"},
        headers={"idempotency-key": "has space"},
    )
    assert reply.status == 400


async def test_get_detail_has_every_required_key(channel: grpc.aio.Channel) -> None:
    reply = await call(channel, "GET", "/sandboxes/sbxrunning")
    assert reply.status == 200
    body = reply.json()
    assert set(body) >= DETAIL_KEYS
    assert body["state"] == "running" and body["envdAccessToken"] == "tok-sbxrunning"
    assert body["lifecycle"] == {"autoResume": False, "onTimeout": "kill"}
    assert body["startedAt"].endswith("Z")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/sandboxes/sbxteamb"),
        ("DELETE", "/sandboxes/sbxteamb"),
        ("POST", "/sandboxes/sbxteamb/timeout"),
        ("POST", "/sandboxes/sbxteamb/pause"),
        ("POST", "/v2/sandboxes/sbxteamb/connect"),
        ("GET", "/sandboxes/sbxteamb/metrics"),
        ("GET", "/sandboxes/no-such-id"),
    ],
)
async def test_other_tenants_sandbox_is_404(
    channel: grpc.aio.Channel, method: str, path: str
) -> None:
    body = {"timeout": 30} if path.endswith("timeout") else None
    reply = await call(channel, method, path, body)
    assert reply.status == 404 and reply.json()["code"] == 404


async def test_same_sandbox_visible_to_its_tenant(channel: grpc.aio.Channel) -> None:
    reply = await call(channel, "GET", "/sandboxes/sbxteamb", tenant="team-b")
    assert reply.status == 200


async def test_kill_timeout_refresh_are_204(
    channel: grpc.aio.Channel, fake: tuple[FakeLifecycle, str]
) -> None:
    # The spec's minimum is 0, and E2B validates requests against it before its handler.
    reply = await call(channel, "POST", "/sandboxes/sbxrunning/timeout", {"timeout": -5})
    assert reply.status == 400
    reply = await call(channel, "POST", "/sandboxes/sbxrunning/timeout", {"timeout": 0})
    assert (reply.status, reply.raw) == (204, b"")
    timeout = [r for name, r in fake[0].calls if name == "SetSandboxTimeout"][-1]
    assert timeout.timeout_seconds == 0
    assert (await call(channel, "POST", "/sandboxes/sbxrunning/timeout", {})).status == 400
    reply = await call(channel, "POST", "/sandboxes/sbxrunning/refreshes", {"duration": 60})
    assert reply.status == 204
    assert (await call(channel, "POST", "/sandboxes/sbxrunning/refreshes")).status == 204
    assert (await call(channel, "DELETE", "/sandboxes/sbxrunning")).status == 204
    assert (await call(channel, "DELETE", "/sandboxes/sbxrunning")).status == 404


async def test_pause_connect_resume(channel: grpc.aio.Channel) -> None:
    assert (await call(channel, "POST", "/sandboxes/sbxrunning/pause", {})).status == 204
    again = await call(channel, "POST", "/sandboxes/sbxrunning/pause")
    assert again.status == 409 and again.headers["should-retry"] == "false"
    connect = await call(channel, "POST", "/v2/sandboxes/sbxrunning/connect", {"timeout": 60})
    assert connect.status == 201 and set(connect.json()) >= SANDBOX_KEYS
    connect = await call(channel, "POST", "/sandboxes/sbxrunning/connect", {"timeout": 60})
    assert connect.status == 200
    assert (await call(channel, "POST", "/sandboxes/sbxrunning/resume", {})).status == 409
    assert (await call(channel, "POST", "/sandboxes/sbxrunning/pause")).status == 204
    resume = await call(channel, "POST", "/sandboxes/sbxrunning/resume", {"timeout": 30})
    assert resume.status == 201 and resume.json()["sandboxID"] == "sbxrunning"
    bad = await call(channel, "POST", "/sandboxes/sbxrunning/connect", {"timeout": -1})
    assert bad.status == 400


async def test_metrics_shape(channel: grpc.aio.Channel, fake: tuple[FakeLifecycle, str]) -> None:
    reply = await call(channel, "GET", "/sandboxes/sbxrunning/metrics?start=100&end=200")
    assert reply.status == 200
    [metric] = reply.json()
    assert set(metric) == {
        "timestamp",
        "timestampUnix",
        "cpuCount",
        "cpuUsedPct",
        "memUsed",
        "memTotal",
        "memCache",
        "diskUsed",
        "diskTotal",
    }
    request = [r for name, r in fake[0].calls if name == "GetSandboxMetrics"][-1]
    assert (request.start.seconds, request.end.seconds) == (100, 200)
    assert (await call(channel, "GET", "/sandboxes/sbxrunning/metrics?start=x")).status == 400


async def test_list_v2_pagination_and_next_token(
    channel: grpc.aio.Channel, fake: tuple[FakeLifecycle, str]
) -> None:
    for i in range(5):
        fake[0].add(make_sandbox(f"sbxpage{i}", metadata={"run": "a b&c=d"}))
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        path = "/v2/sandboxes?limit=2" + (f"&nextToken={token}" if token else "")
        reply = await call(channel, "GET", path)
        assert reply.status == 200
        seen += [s["sandboxID"] for s in reply.json()]
        pages += 1
        token = reply.headers.get("x-next-token", "")
        if not token:
            break
    assert pages == 3 and len(seen) == 6 and len(set(seen)) == 6
    assert all(set(s) >= DETAIL_KEYS for s in reply.json())


async def test_list_v2_metadata_filter_is_decoded_at_every_level(
    channel: grpc.aio.Channel, fake: tuple[FakeLifecycle, str]
) -> None:
    fake[0].add(make_sandbox("sbxmeta", metadata={"run id": "a b&c=d", "x": "1"}))
    # What the SDK does: quote each key and value, urlencode the pairs, and the HTTP client
    # encodes the whole string once more as a query value.
    quoted = {
        urllib.parse.quote(k): urllib.parse.quote(v) for k, v in {"run id": "a b&c=d"}.items()
    }
    query = urllib.parse.urlencode({"metadata": urllib.parse.urlencode(quoted)})
    reply = await call(channel, "GET", "/v2/sandboxes?" + query + "&state=running,paused&order=asc")
    assert reply.status == 200
    assert [s["sandboxID"] for s in reply.json()] == ["sbxmeta"]
    request = [r for name, r in fake[0].calls if name == "ListSandboxes"][-1]
    assert dict(request.metadata) == {"run id": "a b&c=d"}
    assert set(request.states) == {pb.SANDBOX_STATE_RUNNING, pb.SANDBOX_STATE_PAUSED}
    assert request.order == pb.LIST_ORDER_ASC


@pytest.mark.parametrize(
    "query",
    [
        "state=dead",
        "order=up",
        "limit=0",
        "limit=101",
        "limit=x",
        "startedAfter=yesterday",
        "metadata=novalue",
    ],
)
async def test_list_v2_bad_query(channel: grpc.aio.Channel, query: str) -> None:
    reply = await call(channel, "GET", "/v2/sandboxes?" + query)
    assert reply.status == 400 and reply.json()["code"] == 400


async def test_list_v2_started_after(
    channel: grpc.aio.Channel, fake: tuple[FakeLifecycle, str]
) -> None:
    reply = await call(channel, "GET", "/v2/sandboxes?startedAfter=2024-01-02T03:04:05%2B00:00")
    assert reply.status == 200
    request = [r for name, r in fake[0].calls if name == "ListSandboxes"][-1]
    assert request.started_after.seconds == 1704164645


async def test_list_v1_is_running_only_and_unpaged(
    channel: grpc.aio.Channel, fake: tuple[FakeLifecycle, str]
) -> None:
    for i in range(120):
        fake[0].add(make_sandbox(f"sbxmany{i:03d}"))
    fake[0].add(make_sandbox("sbxpaused", state=pb.SANDBOX_STATE_PAUSED))
    reply = await call(channel, "GET", "/sandboxes")
    ids = [s["sandboxID"] for s in reply.json()]
    assert reply.status == 200 and len(ids) == 121 and "sbxpaused" not in ids
    assert "x-next-token" not in reply.headers


async def test_templates(channel: grpc.aio.Channel) -> None:
    reply = await call(channel, "GET", "/templates")
    assert reply.status == 200
    [template] = reply.json()
    assert template["templateID"] == "base" and template["buildStatus"] == "ready"
    detail = await call(channel, "GET", "/templates/base")
    assert detail.status == 200 and len(detail.json()["builds"]) == 1
    assert (await call(channel, "GET", "/templates/nope")).status == 404


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("PUT", "/sandboxes/sbxrunning/network", 501),
        ("GET", "/sandboxes/sbxrunning/logs", 501),
        ("GET", "/sandboxes/metrics", 501),
        ("POST", "/templates", 501),
        ("POST", "/v2/templates", 501),
        ("POST", "/templates/base/builds/b1", 501),
        ("GET", "/templates/default", 501),
        ("GET", "/templates/base/builds/b1/status/more", 404),
        ("GET", "/volumes/x/y", 404),
        ("PUT", "/volumes", 405),
        ("GET", "/teams", 501),
        ("GET", "/nope", 404),
        ("GET", "/sandboxes/sbxrunning/nope", 404),
        ("PUT", "/sandboxes", 405),
        ("GET", "/sandboxes/sbxrunning/pause", 405),
        ("PATCH", "/sandboxes/sbxrunning", 405),
    ],
)
async def test_unsupported_unknown_and_wrong_method(
    channel: grpc.aio.Channel, method: str, path: str, status: int
) -> None:
    reply = await call(channel, method, path)
    body = reply.json()
    assert (reply.status, body["code"]) == (status, status)
    if status == 501:
        assert body["message"].endswith("is not supported by this gateway")


async def test_no_tenant_metadata_is_401(channel: grpc.aio.Channel) -> None:
    reply = await call(channel, "GET", "/sandboxes", tenant=None)
    assert reply.status == 401


async def test_lifecycle_unavailable_is_503(
    channel: grpc.aio.Channel, fake: tuple[FakeLifecycle, str]
) -> None:
    fake[0].fail_next = grpc.StatusCode.UNAVAILABLE
    reply = await call(channel, "GET", "/sandboxes/sbxrunning")
    assert reply.status == 503 and "should-retry" not in reply.headers


async def test_streamed_body_chunks_are_continued(channel: grpc.aio.Channel) -> None:
    stub = ep_grpc.ExternalProcessorStub(channel)
    stream = stub.Process()
    first = ep.ProcessingRequest()
    for key, value in {":method": "POST", ":path": "/v2/sandboxes"}.items():
        header = first.request_headers.headers.headers.add()
        header.key, header.value = key, value
    first.metadata_context.filter_metadata[AUTHZ_NAMESPACE].fields[
        "tenant"
    ].string_value = "default"
    await stream.write(first)
    assert (await stream.read()).WhichOneof("response") == "request_headers"
    await stream.write(ep.ProcessingRequest(request_body=ep.HttpBody(body=b'{"templateID":')))
    assert (await stream.read()).WhichOneof("response") == "request_body"
    await stream.write(
        ep.ProcessingRequest(request_body=ep.HttpBody(body=b'"base"}', end_of_stream=True))
    )
    final = await stream.read()
    assert final.immediate_response.status.code == 201
    await stream.done_writing()
