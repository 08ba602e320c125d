"""A real gateway (`up`, namespace isolation) whose processes the fault tests kill.

The package has its own `up`, not the e2e session's: every test here SIGKILLs one of its
children and expects `up` to restart it, and nothing else should see that.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.gateway import Gateway, running_gateway

# what each of `up`'s children has in its command line
CHILDREN = {
    "lifecycle": "extproc.cli lifecycle",
    "edge": "extproc.cli edge",
    "envoy": "envoy -c",
}


def child_pid(gateway: Gateway, name: str) -> int:
    """The pid of `up`'s child `name` (a key of CHILDREN)."""
    pids = [pid for pid in _children(gateway.process.pid) if CHILDREN[name] in _cmdline(pid)]
    assert len(pids) == 1, (name, pids)
    return pids[0]


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(child) for child in (task / "children").read_text().split())
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.fixture(scope="package")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    state = tmp_path_factory.mktemp("faults")
    env = {
        **os.environ,
        "AGENTCUBE_E2B_UP_EDGE_PROCESSES": "1",
        "AGENTCUBE_E2B_LIFECYCLE_POOL_SIZE": "1",
        "AGENTCUBE_E2B_LIFECYCLE_INTERPRETER_POOL_SIZE": "0",
    }
    with running_gateway(state, state.parent / "faults-gateway.log", env) as gateway:
        yield gateway
