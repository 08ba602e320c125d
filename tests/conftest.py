"""Suite-wide guards: a test that leaves a child process of the test runner alive fails.

Fixtures of wider scope are set up before this function-scoped autouse fixture and torn
down after it, so their long-lived processes (a session's picod, a gateway) are not counted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import support.rootfs  # noqa: F401 (one base rootfs cache for every test and its processes)
from e2e_k8s.versions import RELEASES

# The fixtures that run a test once per agent-sandbox release (tests/e2e_k8s, lifecycle_k8s).
_RELEASE_FIXTURES = ("cluster", "release")
_NEWEST_RELEASE = max(RELEASES, key=lambda name: tuple(int(part) for part in name.split(".")))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test marked `newest_release_only` runs against the newest agent-sandbox release
    alone: deselected (not skipped) for the others. For tests where nothing past the Sandbox
    CR, which other tests write in every release's schema, depends on the release."""
    dropped = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        if item.get_closest_marker("newest_release_only") is None or callspec is None:
            continue
        releases = {callspec.params[name] for name in _RELEASE_FIXTURES if name in callspec.params}
        if releases and releases != {_NEWEST_RELEASE}:
            dropped.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if item not in dropped]


# How long a child may take to exit after the test's own teardown asked it to.
_EXIT_GRACE_SECONDS = 3.0


def _live_children(pid: int) -> set[int]:
    children: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "children").read_text()
        except OSError:
            continue
        children.update(int(child) for child in text.split())
    live: set[int] = set()
    for child in children:
        try:
            stat = Path(f"/proc/{child}/stat").read_text()
        except OSError:
            continue
        state = stat.rsplit(")", 1)[1].split()[0]
        if state != "Z":
            live.add(child)
    return live


def _command_line(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


@pytest.fixture(autouse=True)
def no_leaked_child_processes() -> Iterator[None]:
    before = _live_children(os.getpid())
    yield
    deadline = time.monotonic() + _EXIT_GRACE_SECONDS
    leaked = _live_children(os.getpid()) - before
    while leaked and time.monotonic() < deadline:
        time.sleep(0.05)
        leaked = _live_children(os.getpid()) - before
    if leaked:
        described = [f"{pid}: {_command_line(pid)}" for pid in sorted(leaked)]
        for pid in leaked:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        pytest.fail("test left child processes running:\n" + "\n".join(described))
