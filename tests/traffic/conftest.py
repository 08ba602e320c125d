"""A real gateway (`up`) for the traffic access token tests, one per package."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.gateway import Gateway, running_gateway


@pytest.fixture(scope="package")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    state = tmp_path_factory.mktemp("traffic")
    with running_gateway(state, state.parent / "traffic-gateway.log") as gateway:
        yield gateway
