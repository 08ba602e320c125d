"""Fixtures: the fake API (tests/support/kubeapi.py) with the resources of Kubernetes mode,
a stand-in kubelet and warm pool, a stand-in picod answering /health, and the backend wired
to them through the official client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from kubernetes.client import ApiClient, Configuration

from extproc.k8s.resources import Resources
from extproc.k8s.settings import InformerSettings
from extproc.lifecycle.kubernetes import KubernetesBackend
from extproc.lifecycle.settings import KubernetesSettings
from support.kubeapi import FakeApi, Obj, served

FAST = InformerSettings(
    watch_timeout_s=30, connect_timeout_s=1.0, backoff_initial_s=0.02, backoff_max_s=0.1
)
SYSTEM = "agentcube-system"
TENANT = "team-a"
OTHER = "team-b"
WAIT_S = 5.0


def code_interpreter(name: str, namespace: str = TENANT, **spec: Any) -> Obj:
    return {
        "apiVersion": "runtime.agentcube.volcano.sh/v1alpha1",
        "kind": "CodeInterpreter",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}",
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {
            "ports": [{"name": "envd", "port": 49983}, {"name": "jupyter", "port": 49999}],
            "template": {
                "image": "agentcube-e2b-sandbox:0.1.0",
                "imagePullPolicy": "IfNotPresent",
                "environment": [{"name": "TZ", "value": "UTC"}],
                "resources": {"limits": {"cpu": "2", "memory": "2Gi"}},
            },
            **spec,
        },
    }  # fmt: skip


@dataclass
class Kubelet:
    """Makes a Ready pod (IP 127.0.0.1) for every Sandbox, and plays the warm pool: a claim
    is bound to a fresh pool Sandbox (with an unlabelled pod) a moment after it appears."""

    api: FakeApi
    ready: bool = True
    bind_claims: bool = True
    pool_counter: int = 0
    seen: list[str] = field(default_factory=list)

    def __call__(self, plural: str, kind: str, obj: Obj) -> None:
        meta = obj.get("metadata", {})
        if plural == "sandboxes" and kind == "ADDED":
            self.seen.append(meta["name"])
            template = obj.get("spec", {}).get("podTemplate", {})
            labels = dict(template.get("metadata", {}).get("labels") or {})
            self.api.put("pods", self.pod(meta["namespace"], meta["name"], labels))
        elif plural == "sandboxes" and kind == "DELETED":
            if self.api.get("pods", meta["namespace"], meta["name"]) is not None:
                self.api.delete("pods", meta["namespace"], meta["name"])
        elif plural == "sandboxclaims" and kind == "ADDED" and self.bind_claims:
            self.pool_counter += 1
            name = f"pool-{self.pool_counter}"
            sandbox = {"apiVersion": "agents.x-k8s.io/v1alpha1", "kind": "Sandbox",
                       "metadata": {"name": name, "namespace": meta["namespace"],
                                    "annotations": {"agents.x-k8s.io/pod-name": name + "-pod"}},
                       "spec": {"replicas": 1}}  # fmt: skip
            self.api.put("sandboxes", sandbox)
            self.api.put("pods", self.pod(meta["namespace"], name + "-pod", {"pool": "yes"}))
            bound = dict(obj, status={"sandbox": {"name": name}})
            asyncio.get_running_loop().call_soon(self.api.put, "sandboxclaims", bound)
        elif plural == "sandboxclaims" and kind == "DELETED":
            for (ns, name), sandbox in list(self.api.objects["sandboxes"].items()):
                if sandbox["metadata"].get("annotations", {}).get(
                    "e2b.agentcube.io/claim"
                ) == meta["name"]:
                    self.api.delete("sandboxes", ns, name)

    def pod(self, namespace: str, name: str, labels: dict[str, str]) -> Obj:
        status: Obj = {"phase": "Pending"}
        if self.ready:
            status = {"phase": "Running", "podIP": "127.0.0.1",
                      "conditions": [{"type": "Ready", "status": "True"}]}  # fmt: skip
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": namespace, "labels": labels},
                "status": status}  # fmt: skip


@pytest.fixture
async def api() -> AsyncIterator[FakeApi]:
    def setup(fake: FakeApi) -> None:
        fake.install("secrets", "pods", writable=True)
        fake.install("sandboxes", group="agents.x-k8s.io", version="v1alpha1", writable=True)
        fake.install("sandboxclaims", group="extensions.agents.x-k8s.io", version="v1alpha1",
                     writable=True)  # fmt: skip
        fake.install("codeinterpreters", group="runtime.agentcube.volcano.sh",
                     version="v1alpha1", writable=True)  # fmt: skip
        fake.put("codeinterpreters", code_interpreter("code-interpreter-v1"))
        fake.put("codeinterpreters", code_interpreter("pooled", warmPoolSize=2))
        fake.put("codeinterpreters", code_interpreter("code-interpreter-v1", OTHER))

    async with served(setup) as fake:
        yield fake


@pytest.fixture
def kubelet(api: FakeApi) -> Kubelet:
    stand_in = Kubelet(api)
    api.listeners.append(stand_in)
    return stand_in


class Picod:
    """A stand-in picod: /health 204, /metrics JSON, on a free port of 127.0.0.1."""

    def __init__(self) -> None:
        self.port = 0
        self.requests: list[tuple[str, dict[str, str]]] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            head = (await reader.readuntil(b"\r\n\r\n")).decode()
            path = head.split(" ")[1]
            headers = {}
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name:
                    headers[name.strip().lower()] = value.strip()
            self.requests.append((path, headers))
            if path == "/metrics":
                body = json.dumps({"ts": 1, "cpu_count": 2, "cpu_used_pct": 1.5,
                                   "mem_used": 10, "mem_total": 20, "mem_cache": 1,
                                   "disk_used": 3, "disk_total": 4}).encode()  # fmt: skip
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
            else:
                writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
        writer.close()


@pytest.fixture
async def picod() -> AsyncIterator[Picod]:
    stand_in = Picod()
    await stand_in.start()
    yield stand_in
    await stand_in.stop()


def settings(picod: Picod, **overrides: Any) -> KubernetesSettings:
    values: dict[str, Any] = {"namespace": SYSTEM, "picod_port": picod.port,
                              "ready_timeout_s": 3.0, "claim_poll_s": 0.02}  # fmt: skip
    values.update(overrides)
    return KubernetesSettings(**values)


@pytest.fixture
async def make_backend(
    api: FakeApi, picod: Picod, kubelet: Kubelet
) -> AsyncIterator[Any]:
    started: list[tuple[KubernetesBackend, list[asyncio.Task[None]], ApiClient]] = []

    async def make(**overrides: Any) -> KubernetesBackend:
        configuration = Configuration(host=api.url)
        configuration.retries = 0
        client = ApiClient(configuration)
        backend = KubernetesBackend(
            settings(picod, **overrides), Resources(client), informer_settings=FAST
        )
        tasks = await backend.start()
        started.append((backend, tasks, client))
        return backend

    yield make
    for backend, tasks, client in started:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await backend.close()
        client.close()
    for thread in threading.enumerate():
        if thread.name.startswith(("informer-", "k8s-api")):
            await asyncio.to_thread(thread.join, WAIT_S)
            assert not thread.is_alive(), f"thread {thread.name} still running"


@pytest.fixture
async def backend(make_backend: Any) -> KubernetesBackend:
    made: KubernetesBackend = await make_backend()
    return made
