"""A sandbox killed (or timed out) while a command streams, through `up` with the real SDKs.

The SDKs tell "killed" from "network trouble" by what follows a broken stream: they probe
`GET /health`, and only a 502 (E2B's client-proxy answer for a sandbox that is gone) makes the
error "The sandbox was killed or reached its end of life". Anything slower or vaguer turns it
into a timeout or an "unreachable" error. The JS SDK raises its TimeoutError class with that
same message, as it does against E2B.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator

import httpx
import pytest
from e2b import AsyncSandbox, Sandbox, SandboxNotRunningException

from support.gateway import Gateway

from .js_scripts import run_js_scenario

KILLED = "The sandbox was killed or reached its end of life"
# A healthy probe answers in milliseconds; a probe routed to a stopped daemon never does.
PROBE_TIMEOUT_S = 10


@pytest.fixture
def sandbox(gateway: Gateway) -> Iterator[Sandbox]:
    sbx = Sandbox.create(timeout=120)
    yield sbx
    Sandbox.kill(sbx.sandbox_id)


def streaming(sbx: Sandbox, when_started: Callable[[], object]) -> Exception:
    """Run a command that prints then sleeps for a minute; `when_started` runs once it has
    printed, from the SDK's stream thread. What the run raised (it must raise)."""
    started = threading.Event()

    def on_stdout(_: object) -> None:
        if not started.is_set():
            started.set()
            threading.Thread(target=when_started, daemon=True).start()

    try:
        sbx.commands.run("echo started; sleep 60", on_stdout=on_stdout, timeout=90)
    except Exception as error:  # which one it is, is the test
        assert started.is_set(), "the command never started"
        return error
    raise AssertionError("the command outlived its sandbox")


def test_a_kill_mid_stream_is_reported_as_killed(sandbox: Sandbox) -> None:
    error = streaming(sandbox, lambda: Sandbox.kill(sandbox.sandbox_id))
    assert isinstance(error, SandboxNotRunningException), repr(error)
    assert KILLED in str(error)
    # The state is visible at once: no probe waits for a daemon that is gone.
    assert sandbox.is_running(request_timeout=PROBE_TIMEOUT_S) is False
    with pytest.raises(SandboxNotRunningException, match="was not found"):
        sandbox.commands.run("true")
    with pytest.raises(SandboxNotRunningException, match="was not found"):
        sandbox.files.read("/etc/hostname")


def test_a_background_command_waited_on_is_reported_as_killed(sandbox: Sandbox) -> None:
    handle = sandbox.commands.run("sleep 60", background=True)
    assert Sandbox.kill(sandbox.sandbox_id) is True
    with pytest.raises(SandboxNotRunningException, match=KILLED):
        handle.wait()


def test_the_end_of_a_sandboxs_life_mid_stream_is_reported_as_killed(sandbox: Sandbox) -> None:
    # set_timeout(2) after the command started: the lifecycle ends the sandbox mid-stream.
    error = streaming(sandbox, lambda: sandbox.set_timeout(2))
    assert isinstance(error, SandboxNotRunningException), repr(error)
    assert KILLED in str(error)
    assert sandbox.is_running(request_timeout=PROBE_TIMEOUT_S) is False


async def test_the_async_sdk_reports_a_kill_mid_stream_as_killed(gateway: Gateway) -> None:
    sbx = await AsyncSandbox.create(timeout=120)
    started = asyncio.Event()

    async def on_stdout(_: object) -> None:
        started.set()

    run = asyncio.create_task(
        sbx.commands.run("echo started; sleep 60", on_stdout=on_stdout, timeout=90)
    )
    async with asyncio.timeout(60):
        await started.wait()
        assert await AsyncSandbox.kill(sbx.sandbox_id) is True
        with pytest.raises(SandboxNotRunningException, match=KILLED):
            await run
    assert await sbx.is_running(request_timeout=PROBE_TIMEOUT_S) is False


@pytest.mark.parametrize(
    "sandbox_id",
    ["nonexistingsandbox", "bad-id", "UPPER", "with.dot", "a" * 300, "%2e%2e", "sbx%00"],
)
def test_killing_an_unknown_or_malformed_id_returns_false(
    gateway: Gateway, sandbox_id: str
) -> None:
    assert Sandbox.kill(sandbox_id) is False


@pytest.mark.parametrize(
    ("path", "status"), [("/sandboxes/sbx%00", 404), ("/v2/sandboxes/%00/connect", 404),
                         ("/templates/%00", 400)],
)  # fmt: skip
def test_a_path_envoy_cannot_normalise_gets_e2b_json(
    gateway: Gateway, path: str, status: int
) -> None:
    response = httpx.delete(gateway.url + path, headers={"X-API-Key": gateway.api_key})
    assert response.status_code == status
    assert response.json()["code"] == status and response.json()["message"]


def test_killing_twice_returns_false_the_second_time(gateway: Gateway) -> None:
    sbx = Sandbox.create(timeout=120)
    assert Sandbox.kill(sbx.sandbox_id) is True
    assert Sandbox.kill(sbx.sandbox_id) is False


def test_is_running_right_after_pause_answers_at_once(sandbox: Sandbox) -> None:
    # Paused without autoResume: E2B's answer is "not found", i.e. not running; never a probe
    # left hanging on the stopped daemon. Repeated, since it was an intermittent hang.
    for _ in range(5):
        assert sandbox.pause() is True
        assert sandbox.is_running(request_timeout=PROBE_TIMEOUT_S) is False
        Sandbox.connect(sandbox.sandbox_id)
        assert sandbox.is_running(request_timeout=PROBE_TIMEOUT_S) is True


@pytest.mark.timeout(180)
def test_the_js_sdk_reports_a_kill_mid_stream_as_killed(gateway: Gateway) -> None:
    seen = run_js_scenario(gateway, "killed")
    assert seen["raised"]["message"].endswith(f"{KILLED} while the request was in flight."), (
        json.dumps(seen)
    )
    # The JS SDK's own class for it (as against E2B), never its generic SandboxError.
    assert seen["raised"]["name"] == "TimeoutError"
    assert seen == seen | {
        "runningAfterKill": False,
        "killUnknown": False,
        "killMalformed": False,
        "runningAfterPause": False,
        "runningAfterConnect": True,
    }
