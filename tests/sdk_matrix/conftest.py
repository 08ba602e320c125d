"""One `up` for the whole matrix, and every selected release's environment built before the
first test (usually already built by `make sdk-matrix`: then this only checks the stamps)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from sdk_matrix.installing import Environment, install_all
from sdk_matrix.releases import RELEASES, SdkRelease
from support.gateway import Gateway, running_gateway


@pytest.fixture(scope="package")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    state = tmp_path_factory.mktemp("sdk-matrix-gateway")
    with running_gateway(state, state.parent / "sdk-matrix-gateway.log") as gateway:
        yield gateway


@pytest.fixture(scope="package")
def environments(request: pytest.FixtureRequest) -> dict[str, Environment]:
    """The environments of the releases this run selected, installed in parallel; the
    progress lines go straight to the terminal, since a cold install takes a minute."""
    selected = _selected_releases(request.session.items)
    capture = request.config.pluginmanager.getplugin("capturemanager")
    assert capture is not None
    with capture.global_and_fixture_disabled():
        return install_all(selected, report=lambda line: print(line, file=sys.stderr, flush=True))


def _selected_releases(items: list[pytest.Item]) -> tuple[SdkRelease, ...]:
    names: set[str] = set()
    for item in items:
        callspec = getattr(item, "callspec", None)
        release = callspec.params.get("release") if callspec is not None else None
        if isinstance(release, SdkRelease):
            names.add(release.name)
    return tuple(release for release in RELEASES if release.name in names)
