"""A real gateway (`up`) for the quota tests: its own state, so quotas set here touch no one."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from support.gateway import Gateway, running_gateway


@pytest.fixture(scope="package")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    state = tmp_path_factory.mktemp("quotas")
    env = {
        **os.environ,
        "AGENTCUBE_E2B_LIFECYCLE_POOL_SIZE": "0",
        "AGENTCUBE_E2B_LIFECYCLE_INTERPRETER_POOL_SIZE": "0",
    }
    with running_gateway(state, state.parent / "quotas-gateway.log", env) as gateway:
        yield gateway
