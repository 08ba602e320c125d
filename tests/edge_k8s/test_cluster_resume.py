"""Paused Sandboxes in Kubernetes mode: E2B's "not found", or auto-resume through the
lifecycle service and the informers; and the platform API's replies narrowing routes."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from edge.fake_lifecycle import FakeLifecycle, make_sandbox
from edge.platform_calls import platform
from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc.edge.authz import AuthorizationServicer
from extproc.edge.decision import SandboxDecider
from extproc.edge.server import Edge
from support.kubeapi import FakeApi

from .conftest import DOMAIN
from .test_cluster_edge import SBX_NS, check, denial, envd, pod, sandbox, until, upstream


def paused(sandbox_id: str, auto_resume: bool = True) -> dict[str, object]:
    annotations = {"state": "paused"}
    if auto_resume:
        annotations["auto_resume"] = "true"
    return sandbox(sandbox_id, **annotations)


def resumes(lifecycle: FakeLifecycle) -> list[pb.ResumeSandboxRequest]:
    return [request for name, request in lifecycle.calls if name == "ResumeSandbox"]


@pytest.fixture
def fake(lifecycle: tuple[FakeLifecycle, str]) -> FakeLifecycle:
    """The lifecycle service, knowing sbx7 as a paused sandbox of team-a."""
    service = lifecycle[0]
    service.add(make_sandbox("sbx7", SBX_NS, state=pb.SANDBOX_STATE_PAUSED))
    return service


async def test_a_paused_sandbox_is_not_found_even_while_its_pod_lingers(
    edge: Edge, api: FakeApi, fake: FakeLifecycle
) -> None:
    api.put("pods", pod("sbx7", "10.1.4.1"))  # scaling down: the pod is still Ready
    await until(edge, "sandboxes", api.put("sandboxes", paused("sbx7", auto_resume=False)))
    status, body = denial(await check(edge, envd("sbx7")))
    assert (status, body["message"]) == (502, "The sandbox was not found")
    assert resumes(fake) == []
    # Resumed (the annotation gone) with its pod Ready: routed again.
    await until(edge, "sandboxes", api.put("sandboxes", sandbox("sbx7")))
    assert upstream(await check(edge, envd("sbx7"))) == "10.1.4.1:49983"


async def test_concurrent_requests_share_one_resume_then_are_routed_to_the_new_pod(
    edge: Edge, api: FakeApi, fake: FakeLifecycle
) -> None:
    await until(edge, "sandboxes", api.put("sandboxes", paused("sbx7")))
    fake.resume_gate = asyncio.Event()
    first = [asyncio.create_task(check(edge, envd("sbx7"))) for _ in range(10)]
    await fake.resume_entered.wait()
    fake.resume_gate.set()
    # What the lifecycle and agent-sandbox then do: the annotation goes, a pod starts.
    await until(edge, "sandboxes", api.put("sandboxes", sandbox("sbx7")))
    # Requests arriving while the pod starts (the id is a miss now) join the same resume.
    later = [asyncio.create_task(check(edge, envd("sbx7"))) for _ in range(5)]
    await asyncio.sleep(0)
    api.put("pods", pod("sbx7", "10.1.4.2"))
    responses = await asyncio.gather(*first, *later)
    assert {upstream(response) for response in responses} == {"10.1.4.2:49983"}
    (resume,) = resumes(fake)
    assert (resume.sandbox_id, resume.tenant) == ("sbx7", SBX_NS)


async def test_without_the_lifecycles_resume_nothing_is_routed(
    edge: Edge, api: FakeApi, fake: FakeLifecycle
) -> None:
    await until(edge, "sandboxes", api.put("sandboxes", paused("sbx7")))
    fake.fail_next = grpc.StatusCode.UNAVAILABLE
    status, body = denial(await check(edge, envd("sbx7")))
    assert status == 503
    assert body["message"].startswith("sandbox sbx7 is paused and could not be resumed: ")


async def test_a_sandbox_the_lifecycle_does_not_know_is_not_found(
    edge: Edge, api: FakeApi, lifecycle: tuple[FakeLifecycle, str]
) -> None:
    await until(edge, "sandboxes", api.put("sandboxes", paused("sbx8")))
    status, body = denial(await check(edge, envd("sbx8")))
    assert (status, body["sandboxId"]) == (502, "sbx8")
    assert len(resumes(lifecycle[0])) == 1


async def test_a_pod_slower_than_the_deadline_gets_503_and_a_later_request_is_served(
    edge: Edge, api: FakeApi, fake: FakeLifecycle
) -> None:
    await until(edge, "sandboxes", api.put("sandboxes", paused("sbx7")))
    servicer = AuthorizationServicer(
        edge.keys,
        SandboxDecider(edge.directory, DOMAIN),
        edge.feed,
        edge.signer,
        edge.metrics,
        resume_wait_s=0.1,
    )
    status, body = denial(await servicer.Check(envd("sbx7"), None))
    assert (status, body["message"]) == (
        503,
        "sandbox sbx7 is paused and being resumed; retry the request shortly",
    )
    in_flight = edge.feed.resumes.get("sbx7")
    assert in_flight is not None and not in_flight.done()  # still waiting for the pod
    await until(edge, "sandboxes", api.put("sandboxes", sandbox("sbx7")))
    api.put("pods", pod("sbx7", "10.1.4.3"))
    assert await in_flight is not None
    assert upstream(await servicer.Check(envd("sbx7"), None)) == "10.1.4.3:49983"
    assert len(resumes(fake)) == 1


async def test_a_pause_reply_narrows_the_route_before_the_informers_know(
    edge: Edge, api: FakeApi, lifecycle: tuple[FakeLifecycle, str]
) -> None:
    fake = lifecycle[0]
    fake.add(make_sandbox("sbx9", SBX_NS))
    api.put("sandboxes", sandbox("sbx9"))
    await until(edge, "pods", api.put("pods", pod("sbx9", "10.1.4.4")))
    assert upstream(await check(edge, envd("sbx9"))) == "10.1.4.4:49983"
    assert await platform(edge, "POST", "/sandboxes/sbx9/pause", tenant=SBX_NS) == 204
    assert denial(await check(edge, envd("sbx9")))[0] == 502  # its pod is still Ready
    # The informers never saw the pause: a resume reply goes back to what they show.
    assert await platform(edge, "POST", "/sandboxes/sbx9/resume", tenant=SBX_NS) == 201
    assert upstream(await check(edge, envd("sbx9"))) == "10.1.4.4:49983"


async def test_a_resume_reply_never_widens_a_route_the_informers_show_paused(
    edge: Edge, api: FakeApi, lifecycle: tuple[FakeLifecycle, str]
) -> None:
    lifecycle[0].add(make_sandbox("sbx9", SBX_NS, state=pb.SANDBOX_STATE_PAUSED))
    api.put("pods", pod("sbx9", "10.1.4.4"))
    await until(edge, "sandboxes", api.put("sandboxes", paused("sbx9", auto_resume=False)))
    assert await platform(edge, "POST", "/sandboxes/sbx9/resume", tenant=SBX_NS) == 201
    # Not routed to the pod the informers still show for a paused Sandbox: a miss, which
    # waits for them (the pod here is the one that lingered).
    assert edge.directory.get("sbx9") is None
    pending = asyncio.create_task(check(edge, envd("sbx9")))
    await asyncio.sleep(0)
    api.put("sandboxes", sandbox("sbx9"))
    assert upstream(await pending) == "10.1.4.4:49983"
    assert resumes(lifecycle[0])[0].tenant == SBX_NS  # the platform call, not an auto-resume


async def test_a_reply_for_another_tenants_id_changes_nothing(
    edge: Edge, api: FakeApi, lifecycle: tuple[FakeLifecycle, str]
) -> None:
    # team-b has its own sandbox with the same id in the lifecycle's eyes (a stand-in for a
    # confused reply); the route of team-a's sandbox is left alone.
    lifecycle[0].add(make_sandbox("sbx9", "team-b"))
    api.put("sandboxes", sandbox("sbx9"))
    await until(edge, "pods", api.put("pods", pod("sbx9", "10.1.4.4")))
    assert await platform(edge, "POST", "/sandboxes/sbx9/pause", tenant="team-b") == 204
    assert upstream(await check(edge, envd("sbx9"))) == "10.1.4.4:49983"


async def test_a_kill_is_not_found_at_once(
    edge: Edge, api: FakeApi, lifecycle: tuple[FakeLifecycle, str]
) -> None:
    lifecycle[0].add(make_sandbox("sbx9", SBX_NS))
    api.put("sandboxes", sandbox("sbx9"))
    await until(edge, "pods", api.put("pods", pod("sbx9", "10.1.4.4")))
    assert await platform(edge, "DELETE", "/sandboxes/sbx9", tenant=SBX_NS) == 204
    assert denial(await check(edge, envd("sbx9")))[0] == 502
    assert edge.feed.known_missing("sbx9")
