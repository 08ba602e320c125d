"""A platform call that changes a sandbox is answered once this edge's own watch stream has
shown the change too, so sibling edge processes (fed by the same fan-out) know it as well."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc.edge import watching
from extproc.edge.server import Edge
from extproc.edge.watching import Settling
from support.routes import running_route

from .fake_lifecycle import FakeLifecycle
from .platform_calls import platform

RUNNING = running_route("sbxa", "tok-a", end_at=100.0)
PAUSED = running_route("sbxa", "tok-a", end_at=100.0, state=pb.SANDBOX_STATE_PAUSED)
LATER = running_route("sbxa", "tok-a", end_at=200.0)


async def spin(times: int = 50) -> None:
    for _ in range(times):
        await asyncio.sleep(0)


@pytest.fixture
def long_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    """Waits that only the event can end (a test never passes by running out the clock)."""
    monkeypatch.setattr(watching, "SETTLE_WAIT_S", 60.0)


# --- Settling alone ---------------------------------------------------------------------------


async def test_nothing_to_wait_for_when_the_stream_is_not_live() -> None:
    assert await Settling("sbxa", RUNNING, live=False).until_shows(PAUSED)


@pytest.mark.parametrize(
    ("before", "expected"), [(PAUSED, PAUSED), (None, None), (RUNNING, RUNNING)]
)
async def test_nothing_to_wait_for_when_the_stream_showed_it_before_the_call(
    before: object, expected: object
) -> None:
    settling = Settling("sbxa", before, live=True)  # type: ignore[arg-type]
    assert await settling.until_shows(expected)  # type: ignore[arg-type]


@pytest.mark.usefixtures("long_settle")
async def test_waits_for_the_state_and_end_time_the_reply_had() -> None:
    settling = Settling("sbxa", RUNNING, live=True)
    waiting = asyncio.create_task(settling.until_shows(LATER))
    await spin()
    settling.saw(PAUSED)  # another change: not this one
    await spin()
    assert not waiting.done()
    settling.saw(LATER)
    assert await waiting


@pytest.mark.usefixtures("long_settle")
async def test_waits_for_a_kill_to_show_as_gone() -> None:
    settling = Settling("sbxa", RUNNING, live=True)
    waiting = asyncio.create_task(settling.until_shows(None))
    settling.saw(RUNNING)
    await spin()
    assert not waiting.done()
    settling.saw(None)
    assert await waiting


async def test_gives_up_after_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watching, "SETTLE_WAIT_S", 0.01)
    assert not await Settling("sbxa", RUNNING, live=True).until_shows(PAUSED)


# --- through the platform API ------------------------------------------------------------------


async def answered_after_the_event(
    edge: Edge, call: tuple[str, str], applied: Callable[[], bool], event: Callable[[], Any]
) -> int:
    """Start `call`, wait until its reply reached the directory (`applied()`), check the call
    is still unanswered, then send the change down the watch stream (`await event()`): the
    status. The settle bound is 60 s and this gives up after 30, so an answer that only the
    clock released fails."""
    answer = asyncio.create_task(platform(edge, *call))
    async with asyncio.timeout(30):
        while not applied():
            await asyncio.sleep(0)
        await spin()
        assert not answer.done(), "answered before this edge's watch stream showed the change"
        await event()
        return await answer


@pytest.mark.usefixtures("long_settle")
async def test_a_pause_is_answered_once_the_watch_shows_it(
    edge: Edge, fake: tuple[FakeLifecycle, str]
) -> None:
    lifecycle = fake[0]

    def learnt() -> bool:
        route = edge.directory.get("sbxrunning")
        return route is not None and route.paused

    def paused() -> Any:
        return lifecycle.publish(pb.SANDBOX_EVENT_TYPE_UPDATED, lifecycle.sandboxes["sbxrunning"])

    call = ("POST", "/sandboxes/sbxrunning/pause")
    assert await answered_after_the_event(edge, call, learnt, paused) == 204


@pytest.mark.usefixtures("long_settle")
async def test_a_kill_is_answered_once_the_watch_shows_it(
    edge: Edge, fake: tuple[FakeLifecycle, str]
) -> None:
    lifecycle = fake[0]
    sandbox = lifecycle.sandboxes["sbxrunning"]  # the fake drops it on kill; the event needs it

    def forgotten() -> bool:
        return edge.directory.get("sbxrunning") is None

    def killed() -> Any:
        return lifecycle.publish(pb.SANDBOX_EVENT_TYPE_KILLED, sandbox)

    call = ("DELETE", "/sandboxes/sbxrunning")
    assert await answered_after_the_event(edge, call, forgotten, killed) == 204


@pytest.mark.usefixtures("long_settle")
async def test_an_event_that_beats_the_reply_is_not_waited_for_again(
    edge: Edge, fake: tuple[FakeLifecycle, str]
) -> None:
    # The real lifecycle publishes before it replies: the event usually arrives first.
    def applied_from_the_stream() -> bool:
        route = edge.directory.get("sbxrunning")
        return route is not None and route.paused

    fake[0].publish_pause = applied_from_the_stream
    async with asyncio.timeout(30):  # a hang would be the bug; never reached otherwise
        assert await platform(edge, "POST", "/sandboxes/sbxrunning/pause") == 204


async def test_a_call_that_changes_nothing_is_not_held(
    edge: Edge, fake: tuple[FakeLifecycle, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fake's connect of a running sandbox returns it unchanged: no event will come.
    monkeypatch.setattr(watching, "SETTLE_WAIT_S", 60.0)
    async with asyncio.timeout(30):
        assert await platform(edge, "POST", "/v2/sandboxes/sbxrunning/connect") == 200
        assert await platform(edge, "POST", "/sandboxes/sbxrunning/refreshes") == 204
