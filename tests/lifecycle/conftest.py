from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2_grpc as pb_grpc
from extproc.lifecycle.processes import scan_supervisors
from extproc.lifecycle.server import Running, serving
from extproc.lifecycle.settings import LifecycleSettings, LocalSettings, ServerSettings


def make_settings(state_dir: Path, **local: object) -> LifecycleSettings:
    options: dict[str, object] = {
        "pool_size": 0,
        "interpreter_pool_size": 0,
        "kill_on_exit": True,
        "rootfs_cache_dir": Path(os.environ["AGENTCUBE_E2B_ROOTFS_CACHE_DIR"]),
    }
    options.update(local)
    return LifecycleSettings(
        server=ServerSettings(listen="127.0.0.1:0", grace_s=1.0),
        local=LocalSettings(state_dir=state_dir, **options),  # type: ignore[arg-type]
    )


class Client:
    def __init__(self, running: Running, channel: grpc.aio.Channel) -> None:
        self.running = running
        self.sandboxes = pb_grpc.SandboxServiceStub(channel)
        self.templates = pb_grpc.TemplateServiceStub(channel)
        self.channel = channel


@pytest.fixture
async def lifecycle(tmp_path: Path) -> AsyncIterator[Client]:
    async with (
        serving(make_settings(tmp_path / "state")) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        yield Client(running, channel)
    _assert_no_leak(tmp_path / "state")


def _assert_no_leak(state_dir: Path) -> None:
    marker = f"agentcube-sandbox:{state_dir.resolve()}:"
    strays = scan_supervisors(marker)
    for pid in strays:
        os.killpg(pid, signal.SIGKILL)
    assert not strays, f"sandbox supervisors leaked: {strays}"
