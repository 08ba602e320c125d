"""`up`'s supervisor: the restart decision with a fake clock, the loop with tiny fake children
(`python -c` scripts) and a policy whose delays are milliseconds."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from extproc.core.backoff import Backoff
from extproc.supervising import Crashes, RestartPolicy, Supervisor

POLICY = RestartPolicy()  # 0.1 s doubling to 5 s, reset after 30 s, 5 exits in 60 s
FAST = RestartPolicy(backoff=Backoff(initial_s=0.01, max_s=0.05), crash_limit=4, crash_window_s=60)
SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]
CRASHER = [sys.executable, "-c", "raise SystemExit(3)"]


def _crash_once(marker: Path) -> list[str]:
    """Exits 7 the first time (leaving `marker`), then sleeps like a healthy server."""
    script = (
        "import pathlib, sys, time\n"
        f"m = pathlib.Path({str(marker)!r})\n"
        "if not m.exists():\n"
        "    m.touch(); sys.exit(7)\n"
        "time.sleep(60)\n"
    )
    return [sys.executable, "-c", script]


def _delays(policy: RestartPolicy, runs: list[tuple[float, float]]) -> list[float | None]:
    crashes = Crashes()
    return [crashes.after_exit(policy, started, exited) for started, exited in runs]


def test_the_delay_doubles_from_a_tenth_of_a_second_to_five() -> None:
    # a crash every 20 s, each 1 s after its start: never 5 within 60 s
    runs = [(t * 20.0, t * 20.0 + 1) for t in range(9)]
    assert _delays(POLICY, runs) == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]


def test_a_child_that_ran_healthy_for_30_s_starts_the_backoff_over() -> None:
    runs = [(0.0, 1.0), (1.1, 2.0), (2.2, 40.0), (40.1, 41.0)]
    assert _delays(POLICY, runs) == [0.1, 0.2, 0.1, 0.2]


def test_five_exits_within_60_s_give_up() -> None:
    runs = [(t * 2.0, t * 2.0 + 1) for t in range(5)]
    assert _delays(POLICY, runs) == [0.1, 0.2, 0.4, 0.8, None]


def test_exits_older_than_the_window_do_not_count() -> None:
    # four quick crashes, a minute of peace (not 30 s in one run), then a fifth
    runs = [(0.0, 1.0), (1.1, 2.0), (2.3, 3.0), (3.5, 4.0), (4.8, 62.5)]
    delays = _delays(POLICY, runs)
    assert delays[-1] is not None
    assert delays == [0.1, 0.2, 0.4, 0.8, 0.1]


def _pid(supervisor: Supervisor, name: str) -> int:
    return supervisor.children[name].process.pid


async def _wait_for(predicate: object, timeout_s: float = 10.0) -> None:
    assert callable(predicate)
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_a_crashed_child_is_restarted_alone(tmp_path: Path) -> None:
    said: list[str] = []
    prepared: list[str] = []
    serving = asyncio.Event()

    async def restarted_serves() -> None:
        serving.set()

    supervisor = Supervisor(
        {"steady": SLEEPER, "flaky": _crash_once(tmp_path / "crashed")},
        FAST,
        said.append,
        before_restart={"flaky": lambda: prepared.append("flaky")},
        serving={"flaky": restarted_serves},
    )
    stop = asyncio.Event()
    await supervisor.start_all()
    steady, flaky = _pid(supervisor, "steady"), _pid(supervisor, "flaky")
    supervising = asyncio.create_task(supervisor.supervise(stop))
    try:
        await _wait_for(lambda: supervisor.restarts == 1)
        await asyncio.wait_for(serving.wait(), 5)
        assert _pid(supervisor, "steady") == steady
        assert _pid(supervisor, "flaky") != flaky
        assert prepared == ["flaky"]
        assert said[0] == "flaky exited with status 7; restarting it in 0.01 s"
        assert said[1].startswith("restarted flaky (pid ")
        await _wait_for(lambda: any(line.startswith("flaky serves again") for line in said))
        stop.set()
        assert await supervising == 0
    finally:
        stop.set()
        await supervisor.stop(grace_s=5)
    assert all(c.exited.done() for c in supervisor.children.values())


def _crash_leaving_a_helper(marker: Path, helper_pid: Path) -> list[str]:
    """The first time: starts a helper in its own group that inherits its output (as the
    lifecycle's `unshare` did) and is SIGKILLed, the helper left sleeping; then a sleeper."""
    script = (
        "import os, pathlib, signal, subprocess, sys, time\n"
        f"m = pathlib.Path({str(marker)!r})\n"
        "if not m.exists():\n"
        "    m.touch()\n"
        "    helper = subprocess.Popen(['sleep', '60'])\n"
        f"    pathlib.Path({str(helper_pid)!r}).write_text(str(helper.pid))\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "time.sleep(60)\n"
    )
    return [sys.executable, "-c", script]


async def test_a_crash_is_seen_at_once_though_a_helper_it_left_holds_its_output(
    tmp_path: Path,
) -> None:
    said: list[str] = []
    helper_pid = tmp_path / "helper.pid"
    supervisor = Supervisor(
        {"flaky": _crash_leaving_a_helper(tmp_path / "crashed", helper_pid)}, FAST, said.append
    )
    stop = asyncio.Event()
    await supervisor.start_all()
    supervising = asyncio.create_task(supervisor.supervise(stop))
    try:
        # the helper sleeps 60 s: a supervisor waiting for the pipe would not restart in time
        await _wait_for(lambda: supervisor.restarts == 1, timeout_s=30)
        assert said[0] == "flaky was killed by signal 9; restarting it in 0.01 s"
        # and what it left in its group went with it
        helper = int(helper_pid.read_text())
        await _wait_for(lambda: not Path(f"/proc/{helper}").exists(), timeout_s=10)
        stop.set()
        assert await supervising == 0
    finally:
        stop.set()
        await supervisor.stop(grace_s=5)


async def test_a_child_that_keeps_crashing_is_given_up_on_by_name() -> None:
    said: list[str] = []
    supervisor = Supervisor({"steady": SLEEPER, "broken": CRASHER}, FAST, said.append)
    await supervisor.start_all()
    steady = _pid(supervisor, "steady")
    try:
        code = await asyncio.wait_for(supervisor.supervise(asyncio.Event()), 30)
        assert code == 1
        assert supervisor.restarts == FAST.crash_limit - 1
        assert _pid(supervisor, "steady") == steady
        assert said[-1] == (
            "broken exited with status 3; 4 exits within 60 s: giving up on it, stopping the others"
        )
    finally:
        await supervisor.stop(grace_s=5)


async def test_stopping_during_a_backoff_does_not_restart(tmp_path: Path) -> None:
    said: list[str] = []
    slow = RestartPolicy(backoff=Backoff(initial_s=30, max_s=30))
    supervisor = Supervisor({"flaky": _crash_once(tmp_path / "crashed")}, slow, said.append)
    stop = asyncio.Event()
    await supervisor.start_all()
    supervising = asyncio.create_task(supervisor.supervise(stop))
    try:
        await _wait_for(lambda: bool(said))
        assert said == ["flaky exited with status 7; restarting it in 30 s"]
        stop.set()
        assert await asyncio.wait_for(supervising, 5) == 0
    finally:
        await supervisor.stop(grace_s=5)
    assert supervisor.restarts == 0


@pytest.mark.parametrize("status", [0, -9])
async def test_any_exit_is_unexpected_when_not_stopping(status: int) -> None:
    said: list[str] = []
    script = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)" if status else "pass"
    once = RestartPolicy(crash_limit=1)
    supervisor = Supervisor({"child": [sys.executable, "-c", script]}, once, said.append)
    await supervisor.start_all()
    try:
        assert await asyncio.wait_for(supervisor.supervise(asyncio.Event()), 10) == 1
    finally:
        await supervisor.stop(grace_s=5)
    how = "was killed by signal 9" if status else "exited with status 0"
    assert said[-1].startswith(f"child {how}; 1 exits within 60 s: giving up")


async def test_a_child_that_cannot_be_started_again_stops_supervision(tmp_path: Path) -> None:
    said: list[str] = []
    supervisor = Supervisor({"gone": CRASHER}, FAST, said.append)
    await supervisor.start_all()
    # its binary disappears while it runs (an upgrade gone wrong)
    supervisor.commands["gone"] = [str(tmp_path / "no-such-binary")]
    try:
        assert await asyncio.wait_for(supervisor.supervise(asyncio.Event()), 10) == 1
    finally:
        await supervisor.stop(grace_s=5)
    assert said[-1].startswith("up-supervise-gone failed: FileNotFoundError(")
