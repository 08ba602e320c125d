"""Fixtures: the shared fake Kubernetes API (support.kubeapi on kmock), a kubeconfig for it,
and an edge in Kubernetes mode (keys and directory from informers, the Sandbox proof key
from its Secret) started against it."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from envoy.service.auth.v3 import external_auth_pb2 as auth

from edge.fake_lifecycle import FakeLifecycle, start_fake
from extproc.core.api_keys import hash_api_key
from extproc.core.backoff import Backoff
from extproc.core.identity import load_or_create_router_identity
from extproc.edge.server import Edge
from extproc.edge.settings import DirectorySettings, EdgeSettings, KubernetesSettings
from extproc.k8s.object_proof import DEFAULT_SECRET_NAME
from extproc.k8s.settings import InformerSettings
from support.kubeapi import FakeApi, served

DOMAIN = "e2b.test"
NS = "agentcube-system"
KEY_A = "e2b_" + "a" * 40  # valid, tenant team-a
KEY_B = "e2b_" + "b" * 40  # valid, default namespace
KEY_REVOKED = "e2b_" + "c" * 40
# The Sandbox proof key the lifecycle would have created (Secret e2b-object-proof-key).
PROOF_KEY = bytes(range(32))
# Fast retries so the disconnect tests take milliseconds; the logic is the production one.
FAST = InformerSettings(
    watch_timeout_s=30,
    connect_timeout_s=1.0,
    backoff=Backoff(initial_s=0.02, max_s=0.1, jitter=0.5),
)
MISS_WAIT_S = 0.1
# The edge's informers, in Edge.informers order.
PLURALS = ("secrets", "configmaps", "sandboxes", "pods")
WAIT_S = 5.0


def secret(**statuses: str) -> dict[str, Any]:
    data = {h: base64.b64encode(s.encode()).decode() for h, s in statuses.items()}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "e2b-api-keys", "namespace": NS},
        "data": data,
    }


def config(**entries: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "e2b-api-key-config", "namespace": NS},
        "data": {"defaultNamespace": "default", **entries},
    }


def proof_secret(key: bytes = PROOF_KEY) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": DEFAULT_SECRET_NAME, "namespace": NS},
        "data": {"key": base64.b64encode(key).decode()},
    }


def seed_keys(api: FakeApi) -> None:
    api.put("configmaps", config(**{hash_api_key(KEY_A): "team-a"}))
    api.put(
        "secrets",
        secret(
            **{
                hash_api_key(KEY_A): "valid",
                hash_api_key(KEY_B): "valid",
                hash_api_key(KEY_REVOKED): "revoked",
            }
        ),
    )


def check_request(
    surface: str, host: str = "", path: str = "/", headers: dict[str, str] | None = None
) -> auth.CheckRequest:
    request = auth.CheckRequest()
    request.attributes.context_extensions["surface"] = surface
    http = request.attributes.request.http
    http.host, http.path, http.method = host, path, "GET"
    for key, value in {":authority": host, ":path": path, **(headers or {})}.items():
        http.headers[key] = value
    return request


@pytest.fixture
async def api() -> AsyncIterator[FakeApi]:
    def setup(fake: FakeApi) -> None:
        fake.install("secrets", "configmaps", writable=True)
        fake.install("pods")
        fake.install("sandboxes", group="agents.x-k8s.io", version="v1alpha1")

    async with served(setup) as fake:
        yield fake


@pytest.fixture
def kubeconfig(tmp_path: Path, api: FakeApi) -> Path:
    """A kubeconfig naming the fake API: the edge and the CLI load it as they would a real one."""
    path = tmp_path / "kubeconfig"
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": api.url}}],
        "users": [{"name": "tester", "user": {"token": "fake-token"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "tester"}}],
        "current-context": "fake",
    }
    path.write_text(json.dumps(document))  # JSON is YAML
    return path


@pytest.fixture(scope="session")
def identity_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("identity")
    load_or_create_router_identity(directory)
    return directory


@pytest.fixture
async def lifecycle() -> AsyncIterator[tuple[FakeLifecycle, str]]:
    """The lifecycle service the edge's platform API and auto-resume call (empty)."""
    fake = FakeLifecycle()
    server, target = await start_fake(fake)
    yield fake, target
    await server.stop(0)


def edge_settings(state: Path, kubeconfig: Path, lifecycle_target: str) -> EdgeSettings:
    """Kubernetes mode for keys and directory; the proof key left for `Edge.start()` to read."""
    return EdgeSettings.for_state_dir(
        state,
        listen="127.0.0.1:0",
        metrics_listen="127.0.0.1:0",
        domain=DOMAIN,
        # The platform API and auto-resume still go to lifecycle.
        directory=DirectorySettings(lifecycle_target=lifecycle_target, negative_ttl_s=60.0),
        kubernetes=KubernetesSettings(
            keys_source="kubernetes",
            directory_source="kubernetes",
            kubeconfig=kubeconfig,
            informer=FAST,
            miss_wait_s=MISS_WAIT_S,
            namespace=NS,
        ),
        shutdown_grace_s=0.5,
    )


@pytest.fixture
async def edge(
    tmp_path: Path,
    api: FakeApi,
    kubeconfig: Path,
    identity_dir: Path,
    lifecycle: tuple[FakeLifecycle, str],
) -> AsyncIterator[Edge]:
    seed_keys(api)
    api.put("secrets", proof_secret())
    state = tmp_path / "state"
    shutil.copytree(identity_dir, state / "identity")
    server = Edge(edge_settings(state, kubeconfig, lifecycle[1]))
    await server.start()
    try:
        async with asyncio.timeout(WAIT_S):
            await server.keys.loaded.wait()
            await server.feed.synced.wait()
            # every watch is open, so a test's later change arrives as a watch event
            for informer, plural in zip(server.informers, PLURALS, strict=True):
                await informer.wait_for(
                    lambda _, p=plural: any(w.plural == p for w in api.watchers)
                )
        yield server
    finally:
        await server.stop()
