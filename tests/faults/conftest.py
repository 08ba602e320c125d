"""A real gateway (`up`, namespace isolation) whose processes the fault tests kill.

The package has its own `up`, not the e2e session's: every test here SIGKILLs one of its
children and expects `up` to restart it, and nothing else should see that.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.gateway import exported, sdk_environment, start_up, stop_up
from support.processes import free_port

# what each of `up`'s children has in its command line
CHILDREN = {
    "lifecycle": "extproc.cli lifecycle",
    "edge": "extproc.cli edge",
    "envoy": "envoy -c",
}


@dataclass(frozen=True)
class Gateway:
    url: str
    domain: str
    api_key: str
    state_dir: Path
    log: Path
    process: subprocess.Popen[bytes]

    @property
    def env(self) -> dict[str, str]:
        return {
            "E2B_API_URL": self.url,
            "E2B_SANDBOX_URL": self.url,
            "E2B_DOMAIN": self.domain,
            "E2B_API_KEY": self.api_key,
        }

    def child_pid(self, name: str) -> int:
        """The pid of `up`'s child `name` (a key of CHILDREN)."""
        pids = [pid for pid in _children(self.process.pid) if CHILDREN[name] in _cmdline(pid)]
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
    log = state.parent / "faults-gateway.log"
    env = {
        **os.environ,
        "AGENTCUBE_E2B_UP_EDGE_PROCESSES": "1",
        "AGENTCUBE_E2B_LIFECYCLE_POOL_SIZE": "1",
        "AGENTCUBE_E2B_LIFECYCLE_INTERPRETER_POOL_SIZE": "0",
    }
    process, exports = start_up(state, log, env=env, listen=free_port())
    values = exported(exports)
    gateway = Gateway(
        url=values["E2B_API_URL"],
        domain=values["E2B_DOMAIN"],
        api_key=values["E2B_API_KEY"],
        state_dir=state,
        log=log,
        process=process,
    )
    try:
        with sdk_environment(gateway.env):
            yield gateway
    finally:
        assert stop_up(process) == 0
