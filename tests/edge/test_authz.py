"""Authorization.Check, every branch: in-process calls plus the happy paths over gRPC."""

from __future__ import annotations

import base64
import json
import time
from typing import Any
from urllib.parse import urlencode

import grpc
import jwt
import pytest
from envoy.config.core.v3 import base_pb2 as core
from envoy.service.auth.v3 import external_auth_pb2 as auth
from envoy.service.auth.v3 import external_auth_pb2_grpc as auth_grpc

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc.core.signed_urls import Operation, sign
from extproc.edge.server import Edge

from .conftest import DOMAIN, KEY_A, KEY_B, KEY_EXPIRED, KEY_REVOKED, check_request
from .fake_lifecycle import FakeLifecycle, make_sandbox

ENVD = f"49983-sbxrunning.{DOMAIN}"
TOKEN = "tok-sbxrunning"


def ok_headers(response: auth.CheckResponse) -> dict[str, str]:
    headers = {}
    for option in response.ok_response.headers:
        assert option.append_action == core.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
        headers[option.header.key] = option.header.value
    return headers


def metadata(response: auth.CheckResponse) -> dict[str, Any]:
    return {
        k: v.number_value if v.WhichOneof("kind") == "number_value" else v.string_value
        for k, v in response.dynamic_metadata.fields.items()
    }


def denial(response: auth.CheckResponse) -> tuple[int, dict[str, Any]]:
    assert response.status.code != 0
    assert response.WhichOneof("http_response") == "denied_response"
    denied = response.denied_response
    assert [(h.header.key, h.header.value) for h in denied.headers] == [
        ("content-type", "application/json")
    ]
    return denied.status.code, json.loads(denied.body)


async def check(edge: Edge, request: auth.CheckRequest) -> auth.CheckResponse:
    response: auth.CheckResponse = await edge.authz.Check(request, None)
    return response


# --- platform surface --------------------------------------------------------------------


async def test_platform_valid_key_over_grpc(channel: grpc.aio.Channel) -> None:
    stub = auth_grpc.AuthorizationStub(channel)
    response = await stub.Check(
        check_request("platform", f"api.{DOMAIN}", "/v2/sandboxes", "POST", {"x-api-key": KEY_A})
    )
    assert response.status.code == 0
    assert list(response.ok_response.headers_to_remove) == ["x-api-key"]
    assert metadata(response)["tenant"] == "default"
    assert len(metadata(response)["key_hash"]) == 12


async def test_platform_key_namespace_from_config(edge: Edge) -> None:
    response = await check(edge, check_request("platform", headers={"x-api-key": KEY_B}))
    assert metadata(response)["tenant"] == "team-b"


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "missing API key: set the X-API-Key header"),
        ({"x-api-key": ""}, "missing API key: set the X-API-Key header"),
        ({"x-api-key": "e2b_" + "0" * 40}, "invalid API key"),
        ({"x-api-key": "not-a-key\u00e9"}, "invalid API key"),
        ({"x-api-key": KEY_REVOKED}, "API key has been revoked"),
        ({"x-api-key": KEY_EXPIRED}, "API key has expired"),
        # A forged tenant or upstream header never stands in for a key.
        (
            {"x-agentcube-tenant": "default", "x-envoy-original-dst-host": "1.2.3.4:1"},
            "missing API key: set the X-API-Key header",
        ),
    ],
)
async def test_platform_denials(edge: Edge, headers: dict[str, str], message: str) -> None:
    status, body = denial(await check(edge, check_request("platform", headers=headers)))
    assert (status, body) == (401, {"code": 401, "message": message})


async def test_unknown_surface_is_a_500_answer_not_a_grpc_error(edge: Edge) -> None:
    status, body = denial(await check(edge, check_request("bogus", headers={"x-api-key": KEY_A})))
    assert status == 500 and body["code"] == 500


# --- sandbox surface ---------------------------------------------------------------------


async def test_sandbox_allowed_over_grpc_with_jwt(channel: grpc.aio.Channel, edge: Edge) -> None:
    stub = auth_grpc.AuthorizationStub(channel)
    request = check_request(
        "sandbox",
        ENVD,
        "/process.Process/Start",
        "POST",
        {"x-access-token": TOKEN, "x-api-key": KEY_A, "authorization": "Bearer evil"},
    )
    response = await stub.Check(request)
    assert response.status.code == 0
    assert list(response.ok_response.headers_to_remove) == ["x-api-key", "e2b-traffic-access-token"]
    assert metadata(response) == {
        "upstream_host": "127.0.0.7:49983",
        "sandbox_id": "sbxrunning",
        "tenant": "default",
        "port": 49983,
    }
    headers = ok_headers(response)
    assert set(headers) == {"authorization"}
    token = headers["authorization"].removeprefix("Bearer ")
    claims = jwt.decode(token, edge.signer.public_pem, algorithms=["RS256"])
    assert claims["iss"] == "agentcube-router"
    assert claims["session_id"] == "sbxrunning"
    assert claims["exp"] - claims["iat"] == 300
    assert abs(claims["iat"] - time.time()) < 5
    again = ok_headers(await stub.Check(request))["authorization"]
    assert again == headers["authorization"]  # cached, not re-signed


async def test_header_routing_on_shared_hosts(edge: Edge) -> None:
    for host in (
        "localhost",
        "localhost:8081",
        "127.0.0.1:8081",
        "[::1]:8081",
        "::1",
        f"sandbox.{DOMAIN}",
        f"SANDBOX.{DOMAIN}:443",
    ):
        response = await check(
            edge,
            check_request(
                "sandbox",
                host,
                "/execute",
                "POST",
                {
                    "e2b-sandbox-id": "sbxrunning",
                    "e2b-sandbox-port": "49999",
                },
            ),
        )
        assert metadata(response)["upstream_host"] == "127.0.0.7:49999", host


async def test_host_routing_ignores_headers_on_other_hosts(edge: Edge) -> None:
    response = await check(
        edge,
        check_request(
            "sandbox",
            f"8080-sbxteamb.{DOMAIN}",
            "/",
            "GET",
            {
                "e2b-sandbox-id": "sbxrunning",
                "e2b-sandbox-port": "49983",
            },
        ),
    )
    assert metadata(response) == {
        "upstream_host": "127.0.0.9:8080",
        "sandbox_id": "sbxteamb",
        "tenant": "team-b",
        "port": 8080,
    }


@pytest.mark.parametrize(
    ("host", "headers", "message"),
    [
        ("localhost", {"e2b-sandbox-id": "sbxrunning"}, "missing header"),
        (f"sandbox.{DOMAIN}", {"e2b-sandbox-port": "49983"}, "missing header"),
        ("localhost", {}, "Invalid host"),
        ("10.0.0.1", {}, "Invalid host"),
        (DOMAIN, {}, "Invalid host"),
        (f"49983.{DOMAIN}", {}, "Invalid host"),
        (f"49983-sbx!.{DOMAIN}", {}, "Invalid sandbox ID"),
        (f"49983-.{DOMAIN}", {}, "Invalid sandbox ID"),
        (f"49983-sbx_1.{DOMAIN}", {}, "Invalid sandbox ID"),
        ("localhost", {"e2b-sandbox-id": "Sbx", "e2b-sandbox-port": "1"}, "Invalid sandbox ID"),
        (f"abc-sbxrunning.{DOMAIN}", {}, "Invalid sandbox port"),
        (f"0-sbxrunning.{DOMAIN}", {}, "Invalid sandbox port"),
        (f"65536-sbxrunning.{DOMAIN}", {}, "Invalid sandbox port"),
        (
            "127.0.0.1",
            {"e2b-sandbox-id": "sbxrunning", "e2b-sandbox-port": "-1"},
            "Invalid sandbox port",
        ),
    ],
)
async def test_target_parse_failures(
    edge: Edge, host: str, headers: dict[str, str], message: str
) -> None:
    status, body = denial(await check(edge, check_request("sandbox", host, "/", "GET", headers)))
    assert (status, body) == (400, {"code": 400, "message": message})


async def test_uppercase_host_is_lowercased_like_dns(edge: Edge) -> None:
    response = await check(edge, check_request("sandbox", f"49983-SBXRUNNING.{DOMAIN}", "/health"))
    assert metadata(response)["sandbox_id"] == "sbxrunning"


async def test_spoofed_headers_do_not_change_the_decision(edge: Edge) -> None:
    spoof = {
        "x-envoy-original-dst-host": "10.9.9.9:22",
        "x-agentcube-tenant": "team-b",
        "x-agentcube-e2b-user": "root",
        "authorization": "Bearer forged",
        "x-access-token": TOKEN,
    }
    response = await check(edge, check_request("sandbox", ENVD, "/x", "POST", spoof))
    assert metadata(response) == {
        "upstream_host": "127.0.0.7:49983",
        "sandbox_id": "sbxrunning",
        "tenant": "default",
        "port": 49983,
    }
    headers = ok_headers(response)
    assert set(headers) == {"authorization"} and headers["authorization"] != "Bearer forged"


@pytest.mark.parametrize("token", [None, "", "tok-other", TOKEN + "x"])
async def test_envd_requires_the_access_token(edge: Edge, token: str | None) -> None:
    headers = {} if token is None else {"x-access-token": token}
    response = await check(
        edge, check_request("sandbox", ENVD, "/process.Process/List", "POST", headers)
    )
    status, body = denial(response)
    assert status == 401
    assert body["code"] == 401 and body["message"].startswith("unauthorized access, ")


async def test_token_not_checked_on_other_ports_or_insecure_sandboxes(
    edge: Edge, fake: tuple[FakeLifecycle, str]
) -> None:
    response = await check(
        edge, check_request("sandbox", f"49999-sbxrunning.{DOMAIN}", "/execute", "POST")
    )
    assert response.status.code == 0
    fake[0].add(make_sandbox("sbxopen", secure=False, envd_access_token=""))
    response = await check(edge, check_request("sandbox", f"49983-sbxopen.{DOMAIN}", "/files"))
    assert response.status.code == 0


async def test_health_is_open_but_only_for_get(edge: Edge) -> None:
    assert (await check(edge, check_request("sandbox", ENVD, "/health", "GET"))).status.code == 0
    status, _ = denial(await check(edge, check_request("sandbox", ENVD, "/health", "POST")))
    assert status == 401


def _signed(path: str, operation: Operation, expiration: int | None, user: str = "") -> str:
    params = {"path": path, "signature": sign(path, operation, user, TOKEN, expiration)}
    if user:
        params["username"] = user
    if expiration is not None:
        params["signature_expiration"] = str(expiration)
    return "/files?" + urlencode(params)


async def test_signed_file_urls(edge: Edge) -> None:
    future = int(time.time()) + 60
    for method, operation, path in (
        ("GET", "read", _signed("a.txt", "read", None)),
        ("GET", "read", _signed("a.txt", "read", future, "user")),
        ("POST", "write", _signed("/home/user/b", "write", future)),
    ):
        response = await check(edge, check_request("sandbox", ENVD, path, method))
        assert response.status.code == 0, (method, operation, path)
    for method, path in (
        ("GET", "/files?path=a.txt"),
        ("GET", _signed("a.txt", "write", None)),  # wrong operation
        ("POST", _signed("a.txt", "read", None)),
        ("GET", _signed("a.txt", "read", int(time.time()) - 5)),  # expired
        (
            "GET",
            _signed("a.txt", "read", None).replace("path=a.txt", "path=b.txt", 1),
        ),  # other path
        ("DELETE", _signed("a.txt", "read", None)),
    ):
        status, body = denial(await check(edge, check_request("sandbox", ENVD, path, method)))
        assert status == 401 and body["message"].startswith("unauthorized access"), path


@pytest.mark.parametrize(
    "path", ["/init", "/freeze", "/unfreeze", "/collapse", "/fsfreeze", "/fsthaw", "/init?x=1"]
)
async def test_internal_envd_routes_are_404(edge: Edge, path: str) -> None:
    headers = {"x-access-token": TOKEN}
    status, body = denial(await check(edge, check_request("sandbox", ENVD, path, "POST", headers)))
    assert (status, body) == (404, {"code": 404, "message": "not found"})
    # The same path on a user port is the user's business.
    response = await check(
        edge, check_request("sandbox", f"8000-sbxrunning.{DOMAIN}", path, "POST")
    )
    assert response.status.code == 0


async def test_basic_auth_user_is_forwarded(edge: Edge) -> None:
    async def with_authorization(value: str) -> auth.CheckResponse:
        headers = {"x-access-token": TOKEN, "authorization": value}
        return await check(edge, check_request("sandbox", ENVD, "/x", "POST", headers))

    response = await with_authorization("Basic " + base64.b64encode(b"root:").decode())
    assert ok_headers(response)["x-agentcube-e2b-user"] == "root"
    for bad in ("Basic !!!", "Basic " + base64.b64encode(b"ro\r\not:").decode()):
        status, _ = denial(await with_authorization(bad))
        assert status == 401


async def test_not_found_shapes(edge: Edge, fake: tuple[FakeLifecycle, str]) -> None:
    lifecycle = fake[0]
    lifecycle.add(make_sandbox("sbxpaused", state=pb.SANDBOX_STATE_PAUSED))
    expired = make_sandbox("sbxexpired")
    expired.end_at.seconds = int(time.time()) - 1
    lifecycle.add(expired)
    lifecycle.add(make_sandbox("sbxended", state=pb.SANDBOX_STATE_ENDED))
    for sandbox_id in ("sbxnothere", "sbxpaused", "sbxexpired", "sbxended"):
        request = check_request("sandbox", f"49983-{sandbox_id}.{DOMAIN}", "/health")
        status, body = denial(await check(edge, request))
        assert (status, body) == (
            502,
            {"sandboxId": sandbox_id, "message": "The sandbox was not found", "code": 502},
        )


async def test_miss_reads_through_once_then_caches_negative(
    edge: Edge, fake: tuple[FakeLifecycle, str]
) -> None:
    lifecycle = fake[0]
    # Created behind the watch stream's back: routable on the very next request.
    lifecycle.add(make_sandbox("sbxfresh"))
    response = await check(edge, check_request("sandbox", f"49999-sbxfresh.{DOMAIN}", "/"))
    assert response.status.code == 0
    for _ in range(20):
        await check(edge, check_request("sandbox", f"49999-sbxghost.{DOMAIN}", "/"))
    gets = [r.sandbox_id for name, r in lifecycle.calls if name == "GetSandbox"]
    assert gets == ["sbxfresh", "sbxghost"]
    assert all(r.tenant == "" for name, r in lifecycle.calls if name == "GetSandbox")


async def test_lifecycle_down_on_miss_is_503(edge: Edge, fake: tuple[FakeLifecycle, str]) -> None:
    fake[0].fail_next = grpc.StatusCode.UNAVAILABLE
    status, body = denial(await check(edge, check_request("sandbox", f"49999-sbxx.{DOMAIN}", "/")))
    assert status == 503 and body["code"] == 503


async def test_watch_events_update_the_directory(
    edge: Edge, fake: tuple[FakeLifecycle, str]
) -> None:
    lifecycle = fake[0]
    assert edge.directory.get("sbxrunning") is not None
    killed = make_sandbox("sbxrunning", state=pb.SANDBOX_STATE_ENDED)
    await lifecycle.events.put(
        pb.WatchSandboxesResponse(type=pb.SANDBOX_EVENT_TYPE_KILLED, sandbox=killed, revision=2)
    )
    created = make_sandbox("sbxnew", endpoint_host="127.0.0.8")
    await lifecycle.events.put(
        pb.WatchSandboxesResponse(type=pb.SANDBOX_EVENT_TYPE_CREATED, sandbox=created, revision=3)
    )
    # Wait on the directory itself: the events are applied in order.
    while edge.directory.get("sbxnew") is None:
        await _next_tick()
    assert edge.directory.get("sbxrunning") is None
    del lifecycle.sandboxes["sbxrunning"]
    status, _ = denial(await check(edge, check_request("sandbox", ENVD, "/health")))
    assert status == 502


async def test_watch_gap_or_failure_rewatches_from_a_snapshot(
    edge: Edge, fake: tuple[FakeLifecycle, str]
) -> None:
    lifecycle = fake[0]
    lifecycle.add(make_sandbox("sbxlater"))
    await lifecycle.events.put(grpc.StatusCode.UNAVAILABLE)
    while lifecycle.watchers < 2 or edge.directory.get("sbxlater") is None:
        await _next_tick()
    # A skipped revision also forces a re-watch.
    await lifecycle.events.put(
        pb.WatchSandboxesResponse(
            type=pb.SANDBOX_EVENT_TYPE_CREATED, sandbox=make_sandbox("sbxskip"), revision=9
        )
    )
    while lifecycle.watchers < 3:
        await _next_tick()
    assert edge.directory.get("sbxskip") is None


async def _next_tick() -> None:
    import asyncio

    await asyncio.sleep(0)  # yields to the loop; no wall-clock wait
