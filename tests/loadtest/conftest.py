"""One real gateway (`agentcube-e2b up`) for the load-test runs against it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.gateway import Gateway, running_gateway


@pytest.fixture(scope="package")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    state = tmp_path_factory.mktemp("loadtest-gateway")
    with running_gateway(state, state.parent / "loadtest-gateway.log") as gateway:
        yield gateway
