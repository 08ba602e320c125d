"""Paused sandboxes at the Check: E2B's "not found", or one shared resume with autoResume; and
the platform API's replies (pause, resume, kill) applied to the directory at once."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2 as auth

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc.edge.authz import AuthorizationServicer
from extproc.edge.decision import Allow, Deny, Resume, SandboxDecider
from extproc.edge.sandbox_directory import Directory
from extproc.edge.server import Edge
from support.routes import running_route

from .conftest import DOMAIN, check_request
from .fake_lifecycle import FakeLifecycle, make_sandbox
from .platform_calls import platform

PAUSED = pb.SANDBOX_STATE_PAUSED
TOKEN = "tok-sbxnap"


def envd(sandbox_id: str = "sbxnap", token: str | None = TOKEN) -> auth.CheckRequest:
    headers = {} if token is None else {"x-access-token": token}
    return check_request("sandbox", f"49983-{sandbox_id}.{DOMAIN}", "/process.Process/List",
                         "POST", headers)  # fmt: skip


async def check(servicer: AuthorizationServicer, request: auth.CheckRequest) -> auth.CheckResponse:
    response: auth.CheckResponse = await servicer.Check(request, None)
    return response


def upstream(response: auth.CheckResponse) -> str:
    assert response.status.code == 0, response.denied_response.body
    return str(response.dynamic_metadata.fields["upstream_host"].string_value)


def denial(response: auth.CheckResponse) -> tuple[int, dict[str, Any]]:
    assert response.WhichOneof("http_response") == "denied_response"
    return response.denied_response.status.code, json.loads(response.denied_response.body)


def calls(lifecycle: FakeLifecycle, name: str) -> list[Any]:
    return [request for called, request in lifecycle.calls if called == name]


async def paused_in_directory(
    edge: Edge, lifecycle: FakeLifecycle, sandbox_id: str = "sbxnap", **fields: Any
) -> pb.Sandbox:
    """A paused sandbox the lifecycle knows and the edge learnt through the watch stream."""
    sandbox = lifecycle.add(
        make_sandbox(sandbox_id, state=PAUSED, endpoint_host="127.0.0.5", **fields)
    )
    event = pb.WatchSandboxesResponse(
        type=pb.SANDBOX_EVENT_TYPE_UPDATED, sandbox=sandbox, revision=2
    )
    await lifecycle.events.put(event)
    while (route := edge.directory.get(sandbox_id)) is None or not route.paused:
        await asyncio.sleep(0)
    return sandbox


@pytest.fixture
def lifecycle(fake: tuple[FakeLifecycle, str]) -> FakeLifecycle:
    return fake[0]


def short_wait(edge: Edge, resume_wait_s: float) -> AuthorizationServicer:
    """The edge's own Check with a shorter auto-resume budget."""
    return AuthorizationServicer(
        edge.keys,
        SandboxDecider(edge.directory, DOMAIN),
        edge.feed,
        edge.signer,
        edge.metrics,
        resume_wait_s=resume_wait_s,
    )


# --- the decision ---------------------------------------------------------------------------


def _decider(**fields: Any) -> SandboxDecider:
    directory = Directory()
    directory.put(running_route("sbxnap", TOKEN, state=PAUSED, **fields))
    return SandboxDecider(directory, DOMAIN)


def _decide(decider: SandboxDecider, host: str, headers: dict[str, str], path: str = "/x") -> Any:
    return decider.decide(host, headers, "GET", path)


def test_a_paused_sandbox_without_auto_resume_is_not_found() -> None:
    decision = _decide(_decider(), f"49983-sbxnap.{DOMAIN}", {"x-access-token": TOKEN})
    assert isinstance(decision, Deny)
    assert (decision.status, json.loads(decision.body)["message"]) == (
        502,
        "The sandbox was not found",
    )


def test_a_paused_sandbox_with_auto_resume_asks_for_a_resume_even_past_its_end() -> None:
    # on_timeout "pause": it paused because its end time came.
    decider = _decider(auto_resume=True, end_at=time.time() - 60)
    decision = _decide(decider, f"49983-sbxnap.{DOMAIN}", {"x-access-token": TOKEN})
    assert isinstance(decision, Resume)
    assert decision.route.sandbox_id == "sbxnap" and decision.target.port == 49983


@pytest.mark.parametrize(
    ("host", "headers", "path", "status"),
    [
        (f"49983-sbxnap.{DOMAIN}", {}, "/x", 401),
        (f"49983-sbxnap.{DOMAIN}", {"x-access-token": "wrong"}, "/x", 401),
        (f"49983-sbxnap.{DOMAIN}", {"x-access-token": TOKEN}, "/init", 404),
        (f"49983-sbxnap.{DOMAIN}", {"x-access-token": TOKEN, "authorization": "Basic !"}, "/x",
         401),
        (f"8080-sbxnap.{DOMAIN}", {}, "/x", 403),  # no traffic token, public traffic off
    ],
)  # fmt: skip
def test_a_request_that_would_be_refused_never_wakes_a_sandbox(
    host: str, headers: dict[str, str], path: str, status: int
) -> None:
    decider = _decider(auto_resume=True, public_traffic=False, traffic_access_token="t")
    decision = _decide(decider, host, headers, path)
    assert isinstance(decision, Deny) and decision.status == status


def test_open_paths_resume_too() -> None:
    # The SDK's is_running() is GET /health; E2B wakes an autoResume sandbox on any traffic.
    decision = _decide(_decider(auto_resume=True), f"49983-sbxnap.{DOMAIN}", {}, "/health")
    assert isinstance(decision, Resume)


# --- the Check --------------------------------------------------------------------------------


async def test_concurrent_requests_share_one_resume_and_are_all_served(
    edge: Edge, lifecycle: FakeLifecycle
) -> None:
    await paused_in_directory(edge, lifecycle, auto_resume=True)
    lifecycle.resume_gate = asyncio.Event()
    checks = [asyncio.create_task(check(edge.authz, envd())) for _ in range(20)]
    await lifecycle.resume_entered.wait()
    lifecycle.resume_gate.set()
    responses = await asyncio.gather(*checks)
    assert {upstream(response) for response in responses} == {"127.0.0.5:49983"}
    (resume,) = calls(lifecycle, "ResumeSandbox")
    assert (resume.sandbox_id, resume.tenant) == ("sbxnap", "default")
    # Running now: the next request is routed without asking again.
    assert upstream(await check(edge.authz, envd())) == "127.0.0.5:49983"
    assert len(calls(lifecycle, "ResumeSandbox")) == 1
    assert edge.directory.get("sbxnap").running  # type: ignore[union-attr]


async def test_a_paused_sandbox_without_auto_resume_gets_e2bs_not_found(
    edge: Edge, lifecycle: FakeLifecycle
) -> None:
    await paused_in_directory(edge, lifecycle)
    status, body = denial(await check(edge.authz, envd()))
    assert (status, body) == (
        502,
        {"sandboxId": "sbxnap", "message": "The sandbox was not found", "code": 502},
    )
    assert calls(lifecycle, "ResumeSandbox") == []


async def test_a_paused_sandbox_found_on_a_miss_is_resumed(
    edge: Edge, lifecycle: FakeLifecycle
) -> None:
    lifecycle.add(make_sandbox("sbxnap", state=PAUSED, auto_resume=True, endpoint_host="127.0.0.5"))
    assert upstream(await check(edge.authz, envd())) == "127.0.0.5:49983"
    assert [name for name, _ in lifecycle.calls] == ["GetSandbox", "ResumeSandbox"]


async def test_a_refused_request_does_not_resume(edge: Edge, lifecycle: FakeLifecycle) -> None:
    await paused_in_directory(edge, lifecycle, auto_resume=True)
    assert denial(await check(edge.authz, envd(token="wrong")))[0] == 401
    assert calls(lifecycle, "ResumeSandbox") == []


async def test_the_deadline_answers_503_and_the_resume_carries_on(
    edge: Edge, lifecycle: FakeLifecycle
) -> None:
    await paused_in_directory(edge, lifecycle, auto_resume=True)
    lifecycle.resume_gate = asyncio.Event()
    servicer = short_wait(edge, 0.05)
    status, body = denial(await check(servicer, envd()))
    assert not lifecycle.resume_gate.is_set()  # answered while the resume was still stuck
    assert (status, body["code"]) == (503, 503)
    assert (
        body["message"] == "sandbox sbxnap is paused and being resumed; retry the request shortly"
    )
    # A request arriving meanwhile joins the same resume.
    status, _ = denial(await check(servicer, envd()))
    assert status == 503

    in_flight = edge.feed.resumes.get("sbxnap")
    assert in_flight is not None
    lifecycle.resume_gate.set()
    await in_flight
    assert upstream(await check(servicer, envd())) == "127.0.0.5:49983"
    assert len(calls(lifecycle, "ResumeSandbox")) == 1


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL])
async def test_a_failed_resume_is_an_honest_503_and_the_next_request_tries_again(
    edge: Edge, lifecycle: FakeLifecycle, code: grpc.StatusCode
) -> None:
    await paused_in_directory(edge, lifecycle, auto_resume=True)
    lifecycle.fail_next = code
    status, body = denial(await check(edge.authz, envd()))
    assert status == 503
    assert body["message"].startswith("sandbox sbxnap is paused and could not be resumed: ")
    assert edge.feed.resumes.get("sbxnap") is None  # finished: nothing left in flight
    assert upstream(await check(edge.authz, envd())) == "127.0.0.5:49983"
    assert len(calls(lifecycle, "ResumeSandbox")) == 2


async def test_a_sandbox_gone_before_its_resume_is_not_found(
    edge: Edge, lifecycle: FakeLifecycle
) -> None:
    await paused_in_directory(edge, lifecycle, auto_resume=True)
    del lifecycle.sandboxes["sbxnap"]  # killed behind the watch stream's back
    status, body = denial(await check(edge.authz, envd()))
    assert (status, body["message"]) == (502, "The sandbox was not found")
    assert edge.directory.get("sbxnap") is None
    # Remembered as gone: no further lifecycle call.
    before = len(lifecycle.calls)
    assert denial(await check(edge.authz, envd()))[0] == 502
    assert len(lifecycle.calls) == before


async def test_a_sandbox_resumed_elsewhere_is_read_and_served(
    edge: Edge, lifecycle: FakeLifecycle
) -> None:
    sandbox = await paused_in_directory(edge, lifecycle, auto_resume=True)
    sandbox.state = pb.SANDBOX_STATE_RUNNING  # another edge resumed it first
    assert upstream(await check(edge.authz, envd())) == "127.0.0.5:49983"
    assert [name for name, _ in lifecycle.calls] == ["ResumeSandbox", "GetSandbox"]


# --- the platform API's replies ---------------------------------------------------------------


async def test_a_pause_is_seen_by_the_very_next_request(
    edge: Edge, lifecycle: FakeLifecycle
) -> None:
    request = envd("sbxrunning", "tok-sbxrunning")
    assert upstream(await check(edge.authz, request)) == "127.0.0.7:49983"
    assert await platform(edge, "POST", "/sandboxes/sbxrunning/pause") == 204
    # No watch event was sent: the reply itself paused the route.
    assert edge.directory.get("sbxrunning").paused  # type: ignore[union-attr]
    status, body = denial(await check(edge.authz, request))
    assert (status, body["message"]) == (502, "The sandbox was not found")

    assert await platform(edge, "POST", "/sandboxes/sbxrunning/resume") == 201
    assert upstream(await check(edge.authz, request)) == "127.0.0.7:49983"
    assert calls(lifecycle, "GetSandbox") == []  # all from the replies


async def test_a_pause_of_an_auto_resume_sandbox_is_undone_by_traffic(
    edge: Edge, lifecycle: FakeLifecycle
) -> None:
    lifecycle.sandboxes["sbxrunning"].auto_resume = True
    assert await platform(edge, "POST", "/sandboxes/sbxrunning/pause") == 204
    assert upstream(await check(edge.authz, envd("sbxrunning", "tok-sbxrunning")))
    assert len(calls(lifecycle, "ResumeSandbox")) == 1


async def test_a_kill_is_not_found_at_once_without_asking(
    edge: Edge, lifecycle: FakeLifecycle
) -> None:
    assert await platform(edge, "DELETE", "/sandboxes/sbxrunning") == 204
    status, _ = denial(await check(edge.authz, envd("sbxrunning", "tok-sbxrunning")))
    assert status == 502
    assert calls(lifecycle, "GetSandbox") == []


async def test_a_watch_event_after_the_reply_changes_nothing(
    edge: Edge, lifecycle: FakeLifecycle
) -> None:
    assert await platform(edge, "POST", "/sandboxes/sbxrunning/pause") == 204
    paused = edge.directory.get("sbxrunning")
    event = pb.WatchSandboxesResponse(
        type=pb.SANDBOX_EVENT_TYPE_UPDATED, sandbox=lifecycle.sandboxes["sbxrunning"], revision=2
    )
    await lifecycle.events.put(event)
    await lifecycle.events.put(
        pb.WatchSandboxesResponse(
            type=pb.SANDBOX_EVENT_TYPE_CREATED, sandbox=make_sandbox("sbxmarker"), revision=3
        )
    )
    while edge.directory.get("sbxmarker") is None:
        await asyncio.sleep(0)
    assert edge.directory.get("sbxrunning") == paused


def test_allow_is_what_a_resumed_route_decides() -> None:
    # After the resume the adapter decides again with the running route: an ordinary Allow.
    directory = Directory()
    decider = SandboxDecider(directory, DOMAIN)
    route = running_route("sbxnap", TOKEN, endpoint_host="127.0.0.5", auto_resume=True)
    decision = decider.decide(
        f"49983-sbxnap.{DOMAIN}", {"x-access-token": TOKEN}, "GET", "/x", route
    )
    assert isinstance(decision, Allow) and decision.upstream_host == "127.0.0.5:49983"
