"""Auto-resume through `up` with the real SDKs: traffic to a paused sandbox created with
`lifecycle={"on_timeout": "pause", "auto_resume": True}` wakes it and is served; without
auto_resume the SDK gets E2B's answer for a paused sandbox ("not found")."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from e2b import AsyncSandbox, Sandbox, SandboxNotRunningException, SandboxState

from support.gateway import Gateway

from .js_scripts import run_js_scenario

AUTO_RESUME = {"on_timeout": "pause", "auto_resume": True}


@pytest.fixture
def sleeper(gateway: Gateway) -> Iterator[Sandbox]:
    """A sandbox with auto_resume, paused."""
    sbx = Sandbox.create(timeout=120, lifecycle=AUTO_RESUME)  # type: ignore[arg-type]
    assert sbx.pause() is True
    yield sbx
    Sandbox.kill(sbx.sandbox_id)


def resumes_logged(gateway: Gateway, sandbox_id: str) -> int:
    """How many times an edge resumed `sandbox_id` on traffic (one log line each)."""
    text = gateway.log.read_text(errors="replace")
    return text.count(f"auto-resumed sandbox {sandbox_id} on traffic")


def test_a_command_wakes_a_paused_sandbox_without_connect(
    gateway: Gateway, sleeper: Sandbox
) -> None:
    assert Sandbox.get_info(sleeper.sandbox_id).state is SandboxState.PAUSED
    result = sleeper.commands.run("echo woke")
    assert (result.exit_code, result.stdout) == (0, "woke\n")
    assert Sandbox.get_info(sleeper.sandbox_id).state is SandboxState.RUNNING
    assert resumes_logged(gateway, sleeper.sandbox_id) == 1


def test_files_and_health_wake_it_too(gateway: Gateway, sleeper: Sandbox) -> None:
    sleeper.files.write("kept.txt", "still here")
    assert sleeper.pause() is True
    assert sleeper.files.read("kept.txt") == "still here"
    assert sleeper.pause() is True
    # is_running() is GET /health: traffic like any other, as on E2B.
    assert sleeper.is_running(request_timeout=10) is True
    assert resumes_logged(gateway, sleeper.sandbox_id) == 3


async def test_concurrent_requests_wait_for_one_resume(gateway: Gateway) -> None:
    sbx = await AsyncSandbox.create(timeout=120, lifecycle=AUTO_RESUME)  # type: ignore[arg-type]
    try:
        assert await sbx.pause() is True
        runs = [sbx.commands.run(f"echo {n}") for n in range(12)]
        results = await asyncio.gather(*runs)
        assert sorted(r.stdout for r in results) == sorted(f"{n}\n" for n in range(12))
        assert resumes_logged(gateway, sbx.sandbox_id) == 1
    finally:
        await AsyncSandbox.kill(sbx.sandbox_id)


def test_without_auto_resume_a_paused_sandbox_is_not_found(gateway: Gateway) -> None:
    sbx = Sandbox.create(timeout=120)
    try:
        assert sbx.pause() is True
        with pytest.raises(SandboxNotRunningException, match="was not found"):
            sbx.commands.run("echo never")
        with pytest.raises(SandboxNotRunningException, match="was not found"):
            sbx.files.read("/etc/hostname")
        assert sbx.is_running(request_timeout=10) is False
        assert Sandbox.get_info(sbx.sandbox_id).state is SandboxState.PAUSED
        assert resumes_logged(gateway, sbx.sandbox_id) == 0
        # connect() is how such a sandbox comes back.
        Sandbox.connect(sbx.sandbox_id)
        assert sbx.commands.run("echo back").stdout == "back\n"
    finally:
        Sandbox.kill(sbx.sandbox_id)


@pytest.mark.timeout(180)
def test_the_js_sdk_wakes_an_auto_resume_sandbox(gateway: Gateway) -> None:
    seen = run_js_scenario(gateway, "auto_resume")
    assert seen == {
        "stateAfterPause": "paused",
        "stdout": "woke\n",
        "stateAfterRun": "running",
        # What the JS SDK makes of E2B's 502 "The sandbox was not found".
        "plainRaised": {
            "name": "SandboxNotFoundError",
            "message": "Sandbox is probably not running anymore",
        },
    }
