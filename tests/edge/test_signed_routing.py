"""Signed `/files` URLs that name no sandbox (built from E2B_SANDBOX_URL): found by the token
that verifies them, cached, budgeted, and answered like any wrong signature when none does."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from typing import Any
from urllib.parse import urlencode

import pytest
from envoy.service.auth.v3 import external_auth_pb2 as auth

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc.core import signed_urls
from extproc.core.errors import ResourceExhausted
from extproc.edge.authz import AuthorizationServicer
from extproc.edge.decision import Allow, Deny, Locate, SandboxDecider
from extproc.edge.sandbox_directory import Directory, Route
from extproc.edge.server import Edge
from extproc.edge.signed_routing import SCAN_SLICE, SignatureRouter
from support.routes import running_route

from .conftest import DOMAIN, check_request
from .fake_lifecycle import FakeLifecycle, make_sandbox
from .platform_calls import platform

SHARED = "127.0.0.1:8081"  # what `up` puts in E2B_SANDBOX_URL
BAD_SIGNATURE = {"code": 401, "message": "unauthorized access, invalid signature"}


def signed_query(
    token: str, path: str = "a.txt", operation: signed_urls.Operation = "read", **extra: Any
) -> dict[str, str]:
    expiration = extra.pop("expiration", None)
    user = extra.pop("user", "")
    params = {"path": path, "signature": signed_urls.sign(path, operation, user, token, expiration)}
    if user:
        params["username"] = user
    if expiration is not None:
        params["signature_expiration"] = str(expiration)
    return params | extra


def signed_path(token: str, path: str = "a.txt", operation: signed_urls.Operation = "read") -> str:
    return "/files?" + urlencode(signed_query(token, path, operation))


class CountingDirectory(Directory):
    """A directory that counts full snapshots, i.e. scans."""

    def __init__(self) -> None:
        super().__init__()
        self.scans = 0

    def routes(self) -> list[Route]:
        self.scans += 1
        return super().routes()


def directory_of(count: int, token: str | None = None, **fields: Any) -> CountingDirectory:
    """`count` running sandboxes sbx<n> with tokens tok-<n> (or all `token`)."""
    directory = CountingDirectory()
    for n in range(count):
        directory.put(running_route(f"sbx{n}", f"tok-{n}" if token is None else token, **fields))
    return directory


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- the signing rule, taken apart -----------------------------------------------------------


@pytest.mark.parametrize("expiration", [None, 1_800_000_000])
@pytest.mark.parametrize("user", ["", "root"])
def test_the_parts_around_the_token_make_the_sdks_signature(
    expiration: int | None, user: str
) -> None:
    before, after = signed_urls.signed_around_token("dir/ü.txt", "write", user, expiration)
    digest = hashlib.sha256(before + b"tok" + after).digest()
    expected = signed_urls.sign("dir/ü.txt", "write", user, "tok", expiration)
    assert signed_urls.sign_digest(digest) == expected
    assert signed_urls.signature_digest(expected) == digest


@pytest.mark.parametrize(
    "signature",
    ["", "v1_", "v2_" + "A" * 43, "v1_" + "A" * 42, "v1_" + "A" * 44, "v1_" + "A" * 42 + "B",
     "v1_" + "A" * 42 + "=", "v1_" + "-" * 43, "V1_" + "A" * 43],
)  # fmt: skip
def test_only_a_signature_sign_could_make_has_a_digest(signature: str) -> None:
    assert signed_urls.signature_digest(signature) is None


# --- the router -----------------------------------------------------------------------------


async def test_finds_the_one_sandbox_whose_token_verifies() -> None:
    router = SignatureRouter(directory_of(50))
    assert await router.find(signed_query("tok-37"), "read") == "sbx37"
    assert await router.find(signed_query("tok-3", "b", "write", user="root"), "write") == "sbx3"
    expiring = signed_query("tok-12", expiration=int(time.time()) + 60)
    assert await router.find(expiring, "read") == "sbx12"


@pytest.mark.parametrize(
    "params",
    [
        signed_query("tok-none"),  # no sandbox has this token
        signed_query("tok-5", "a.txt", "write"),  # signed for the other operation
        signed_query("tok-5") | {"path": "b.txt"},  # signed for another path
        signed_query("tok-5", user="root") | {"username": "user"},
        signed_query("tok-5", expiration=2_000_000_000) | {"signature_expiration": "2000000001"},
        {"path": "a.txt", "signature": "v1_" + "A" * 42 + "B"},  # not canonical base64
    ],
)
async def test_none_when_no_token_verifies(params: dict[str, str]) -> None:
    router = SignatureRouter(directory_of(10))
    assert await router.find(params, "read") is None
    assert len(router) == 0  # only a verifying signature is remembered


async def test_two_sandboxes_that_verify_are_refused() -> None:
    directory = directory_of(3)
    directory.put(running_route("sbxtwin", "tok-1"))
    assert await SignatureRouter(directory).find(signed_query("tok-1"), "read") is None


async def test_routes_without_a_token_are_skipped() -> None:
    # Kubernetes-style routes hold only a digest: they can verify nothing.
    directory = directory_of(2, token="", access_token_sha256=b"d" * 32)
    directory.put(running_route("sbxlocal", "tok-local"))
    assert await SignatureRouter(directory).find(signed_query("tok-local"), "read") == "sbxlocal"
    assert await SignatureRouter(directory).find(signed_query(""), "read") is None


async def test_a_found_signature_is_answered_from_the_cache_without_a_scan() -> None:
    directory = directory_of(100)
    router = SignatureRouter(directory)
    params = signed_query("tok-99")
    assert await router.find(params, "read") == "sbx99"
    assert directory.scans == 1
    for _ in range(5):
        assert await router.find(params, "read") == "sbx99"
    assert directory.scans == 1
    # A miss is never cached: every forged signature costs a scan (and budget).
    for _ in range(3):
        assert await router.find(signed_query("tok-forged"), "read") is None
    assert directory.scans == 4


async def test_concurrent_requests_for_one_signature_share_one_scan() -> None:
    directory = directory_of(3 * SCAN_SLICE)  # yields twice: the others arrive meanwhile
    router = SignatureRouter(directory)
    params = signed_query(f"tok-{3 * SCAN_SLICE - 1}")
    found = await asyncio.gather(*(router.find(params, "read") for _ in range(10)))
    assert found == [f"sbx{3 * SCAN_SLICE - 1}"] * 10
    assert directory.scans == 1


async def test_a_scan_lets_other_tasks_run_between_slices() -> None:
    router = SignatureRouter(directory_of(4 * SCAN_SLICE))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = ticks
    assert await router.find(signed_query("tok-nobody"), "read") is None
    task.cancel()
    assert ticks - before >= 3  # one per slice after the first


async def test_the_scan_budget_refuses_then_refills() -> None:
    clock = Clock()
    directory = directory_of(100)
    router = SignatureRouter(directory, clock, budget_per_s=250)  # two scans of 100 a second
    assert await router.find(signed_query("tok-1"), "read") == "sbx1"
    assert await router.find(signed_query("tok-2"), "read") == "sbx2"
    with pytest.raises(ResourceExhausted):
        await router.find(signed_query("tok-3"), "read")
    # Cached signatures cost no budget.
    assert await router.find(signed_query("tok-1"), "read") == "sbx1"
    clock.now += 0.5  # 125 candidates' worth
    assert await router.find(signed_query("tok-3"), "read") == "sbx3"


async def test_a_directory_larger_than_the_budget_is_scanned_when_the_budget_is_full() -> None:
    clock = Clock()
    router = SignatureRouter(directory_of(100), clock, budget_per_s=10)
    assert await router.find(signed_query("tok-7"), "read") == "sbx7"
    with pytest.raises(ResourceExhausted):
        await router.find(signed_query("tok-8"), "read")
    clock.now += 1
    assert await router.find(signed_query("tok-8"), "read") == "sbx8"


@pytest.mark.parametrize("budget", [0.0, -1.0, float("inf"), float("nan")])
def test_a_budget_must_be_positive_and_finite(budget: float) -> None:
    # An infinite rate would make the token bucket NaN and refuse every scan.
    with pytest.raises(ValueError, match="budget_per_s must be positive and finite"):
        SignatureRouter(Directory(), budget_per_s=budget)


# --- the decision ---------------------------------------------------------------------------


def decider() -> SandboxDecider:
    directory = Directory()
    directory.put(running_route("sbxa", "tok-a"))
    return SandboxDecider(directory, DOMAIN)


@pytest.mark.parametrize(
    "host", ["127.0.0.1:8081", "127.0.0.1", "localhost:9", f"sandbox.{DOMAIN}", "[::1]:8081",
             "::1", f"SANDBOX.{DOMAIN.upper()}:443"],
)  # fmt: skip
def test_a_signed_url_on_a_shared_host_without_headers_is_located(host: str) -> None:
    decision = decider().decide(host, {}, "GET", signed_path("tok-a"))
    assert isinstance(decision, Locate)
    assert decision.operation == "read" and decision.params["path"] == "a.txt"
    upload = decider().decide(host, {}, "POST", signed_path("tok-a", operation="write"))
    assert isinstance(upload, Locate) and upload.operation == "write"


@pytest.mark.parametrize(
    ("host", "headers", "method", "path", "status", "message"),
    [
        # Not a signed /files request: the target is parsed as before.
        (SHARED, {}, "GET", "/files?path=a.txt", 401,
         "unauthorized access, please provide a valid access token or a valid signature"),
        (SHARED, {}, "DELETE", signed_path("tok-a"), 400, "Invalid host"),
        (SHARED, {}, "GET", "/filesx?" + signed_path("tok-a").split("?")[1], 400,
         "Invalid host"),
        ("[::1", {}, "GET", signed_path("tok-a"), 400, "Invalid host"),
        (f"api.{DOMAIN}", {}, "GET", signed_path("tok-a"), 400, "Invalid host"),
        (f"sandbox.{DOMAIN}.evil", {}, "GET", signed_path("tok-a"), 400, "Invalid host"),
        (SHARED, {"e2b-sandbox-port": "49983"}, "GET", signed_path("tok-a"), 400,
         "missing header"),
        # Public checks, before any lookup.
        (SHARED, {}, "GET", "/files?path=a&signature=v1_short", 401,
         "unauthorized access, invalid signature"),
        (SHARED, {}, "GET", signed_path("tok-a") + "&signature_expiration=1", 401,
         "unauthorized access, signature is already expired"),
        (SHARED, {}, "GET", signed_path("tok-a") + "&signature_expiration=x", 401,
         "unauthorized access, invalid signature expiration"),
        (SHARED, {}, "GET", signed_path("tok-a") + "&path=b", 400,
         "the path query parameter is given more than once"),
    ],
)  # fmt: skip
def test_what_is_not_located(
    host: str, headers: dict[str, str], method: str, path: str, status: int, message: str
) -> None:
    decision = decider().decide(host, headers, method, path)
    assert isinstance(decision, Deny), decision
    assert (decision.status, json.loads(decision.body)) == (
        status,
        {"code": status, "message": message},
    )


def test_a_signed_url_with_routing_headers_is_routed_by_them() -> None:
    headers = {"e2b-sandbox-id": "sbxa", "e2b-sandbox-port": "49983"}
    decision = decider().decide(SHARED, headers, "GET", signed_path("tok-a"))
    assert isinstance(decision, Allow) and decision.sandbox_id == "sbxa"


# --- the Check ------------------------------------------------------------------------------


async def check(servicer: AuthorizationServicer, path: str, method: str = "GET") -> Any:
    response: auth.CheckResponse = await servicer.Check(
        check_request("sandbox", SHARED, path, method), None
    )
    return response


def allowed_upstream(response: auth.CheckResponse) -> str:
    assert response.status.code == 0, response.denied_response.body
    return str(response.dynamic_metadata.fields["upstream_host"].string_value)


def denied(response: auth.CheckResponse) -> tuple[int, dict[str, Any]]:
    assert response.WhichOneof("http_response") == "denied_response"
    return response.denied_response.status.code, json.loads(response.denied_response.body)


async def test_a_signed_download_and_upload_reach_their_sandbox(edge: Edge) -> None:
    assert allowed_upstream(await check(edge.authz, signed_path("tok-sbxteamb"))) == (
        "127.0.0.9:49983"
    )
    upload = signed_path("tok-sbxrunning", "up.bin", "write")
    assert allowed_upstream(await check(edge.authz, upload, "POST")) == "127.0.0.7:49983"


async def test_a_wrong_signature_gets_the_same_401_as_on_a_url_that_names_its_sandbox(
    edge: Edge,
) -> None:
    forged = signed_path("tok-nobody")
    assert denied(await check(edge.authz, forged)) == (401, BAD_SIGNATURE)
    named = await edge.authz.Check(
        check_request("sandbox", f"49983-sbxrunning.{DOMAIN}", forged), None
    )
    assert denied(named) == (401, BAD_SIGNATURE)
    # The right signature for the wrong operation is just as wrong.
    upload_signed = signed_path("tok-sbxrunning", operation="write")
    assert denied(await check(edge.authz, upload_signed)) == (401, BAD_SIGNATURE)


async def test_a_cached_signature_is_still_verified_for_its_path(edge: Edge) -> None:
    assert allowed_upstream(await check(edge.authz, signed_path("tok-sbxrunning")))
    # Same signature, another path: the cache names the sandbox, its token refuses the path.
    params = signed_query("tok-sbxrunning") | {"path": "/etc/shadow"}
    assert denied(await check(edge.authz, "/files?" + urlencode(params))) == (401, BAD_SIGNATURE)


async def test_a_new_sandbox_is_found_from_the_create_reply_before_its_watch_event(
    edge: Edge, fake: tuple[FakeLifecycle, str]
) -> None:
    assert (
        await platform(edge, "POST", "/v2/sandboxes", body=b'{"templateID": "base", "timeout": 60}')
        == 201
    )
    created = fake[0].sandboxes["sbx0001"]
    path = signed_path(created.envd_access_token)
    assert allowed_upstream(await check(edge.authz, path)) == "127.0.0.7:49983"
    assert [name for name, _ in fake[0].calls] == ["CreateSandbox"]  # no fallback read


async def test_a_paused_auto_resume_sandbox_is_resumed_by_its_signed_url(
    edge: Edge, fake: tuple[FakeLifecycle, str]
) -> None:
    lifecycle = fake[0]
    sandbox = lifecycle.add(make_sandbox("sbxnap", state=pb.SANDBOX_STATE_PAUSED, auto_resume=True))
    await lifecycle.events.put(
        pb.WatchSandboxesResponse(type=pb.SANDBOX_EVENT_TYPE_UPDATED, sandbox=sandbox, revision=2)
    )
    while edge.directory.get("sbxnap") is None:
        await asyncio.sleep(0)
    assert allowed_upstream(await check(edge.authz, signed_path("tok-sbxnap"))) == (
        "127.0.0.7:49983"
    )
    assert [name for name, _ in lifecycle.calls] == ["ResumeSandbox"]


async def test_a_killed_sandboxs_cached_url_is_not_found(edge: Edge) -> None:
    path = signed_path("tok-sbxrunning")
    assert allowed_upstream(await check(edge.authz, path))
    edge.feed.forget("sbxrunning")
    status, body = denied(await check(edge.authz, path))
    assert (status, body["message"]) == (502, "The sandbox was not found")


async def test_over_budget_is_429_and_cached_urls_still_pass(edge: Edge) -> None:
    clock = Clock()
    servicer = AuthorizationServicer(
        edge.keys,
        SandboxDecider(edge.directory, DOMAIN),
        edge.feed,
        edge.signer,
        edge.metrics,
        signatures=SignatureRouter(edge.directory, clock, budget_per_s=len(edge.directory)),
    )
    cached = signed_path("tok-sbxrunning")
    assert allowed_upstream(await check(servicer, cached))
    status, body = denied(await check(servicer, signed_path("tok-sbxteamb")))
    assert status == 429 and body["message"].startswith("too many new signed URLs")
    assert allowed_upstream(await check(servicer, cached))
    clock.now += 1
    assert allowed_upstream(await check(servicer, signed_path("tok-sbxteamb")))


async def test_without_a_router_the_401_says_to_use_the_sandbox_host(edge: Edge) -> None:
    # Kubernetes mode: the edge holds token digests, which cannot verify a signature.
    servicer = AuthorizationServicer(
        edge.keys, SandboxDecider(edge.directory, DOMAIN), edge.feed, edge.signer, edge.metrics
    )
    status, body = denied(await check(servicer, signed_path("tok-sbxrunning")))
    assert status == 401
    assert "49983-<sandboxID>.<domain>" in body["message"]
    assert "E2B_SANDBOX_URL" in body["message"]
