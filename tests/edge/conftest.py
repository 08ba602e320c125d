"""Fixtures: a fake lifecycle on port 0, a started edge against it, CheckRequest builders."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2 as auth

from extproc.core.api_keys import KeyStatus, hash_api_key
from extproc.core.backoff import Backoff
from extproc.core.identity import load_or_create_router_identity
from extproc.edge.server import Edge
from extproc.edge.settings import DirectorySettings, EdgeSettings

from .fake_lifecycle import FakeLifecycle, make_sandbox, start_fake

DOMAIN = "e2b.test"
KEY_A = "e2b_" + "a" * 40
KEY_B = "e2b_" + "b" * 40
KEY_REVOKED = "e2b_" + "c" * 40
KEY_EXPIRED = "e2b_" + "d" * 40


def write_keys(state_dir: Path) -> None:
    keys = state_dir / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    statuses = {
        hash_api_key(KEY_A): KeyStatus.VALID.value,
        hash_api_key(KEY_B): KeyStatus.VALID.value,
        hash_api_key(KEY_REVOKED): KeyStatus.REVOKED.value,
        hash_api_key(KEY_EXPIRED): KeyStatus.EXPIRED.value,
    }
    (keys / "e2b-api-keys.json").write_text(
        json.dumps({"apiVersion": "v1", "kind": "Secret", "stringData": statuses})
    )
    config = {"defaultNamespace": "default", hash_api_key(KEY_B): "team-b"}
    (keys / "e2b-api-key-config.json").write_text(
        json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "data": config})
    )


def check_request(
    surface: str,
    host: str = "",
    path: str = "/",
    method: str = "GET",
    headers: dict[str, str] | None = None,
) -> auth.CheckRequest:
    request = auth.CheckRequest()
    request.attributes.context_extensions["surface"] = surface
    http = request.attributes.request.http
    http.host = host
    http.path = path
    http.method = method
    http.headers[":authority"] = host
    http.headers[":path"] = path
    http.headers[":method"] = method
    for key, value in (headers or {}).items():
        http.headers[key] = value
    return request


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeLifecycle, str]]:
    lifecycle = FakeLifecycle()
    lifecycle.add(make_sandbox("sbxrunning", "default"))
    lifecycle.add(make_sandbox("sbxteamb", "team-b", endpoint_host="127.0.0.9"))
    server, target = await start_fake(lifecycle)
    yield lifecycle, target
    await server.stop(0)


@pytest.fixture(scope="session")
def identity_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One RSA key pair for the session: generating one costs up to seconds on a busy box."""
    directory = tmp_path_factory.mktemp("identity")
    load_or_create_router_identity(directory)
    return directory


def copy_identity(source: Path, state_dir: Path) -> None:
    target = state_dir / "identity"
    target.mkdir(parents=True, exist_ok=True)
    for name in ("private.pem", "public.pem"):
        shutil.copy2(source / name, target / name)


@pytest.fixture
async def edge(
    tmp_path: Path, fake: tuple[FakeLifecycle, str], identity_dir: Path
) -> AsyncIterator[Edge]:
    write_keys(tmp_path)
    copy_identity(identity_dir, tmp_path)
    settings = EdgeSettings.for_state_dir(
        tmp_path,
        listen="127.0.0.1:0",
        metrics_listen="127.0.0.1:0",
        domain=DOMAIN,
        directory=DirectorySettings(
            lifecycle_target=fake[1], backoff=Backoff(initial_s=0.01, max_s=5.0)
        ),
        shutdown_grace_s=0.5,
    )
    server = Edge(settings)
    await server.start()
    await server.keys.loaded.wait()
    await server.feed.synced.wait()
    yield server
    await server.stop()


@pytest.fixture
async def channel(edge: Edge) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{edge.port}") as chan:
        yield chan
