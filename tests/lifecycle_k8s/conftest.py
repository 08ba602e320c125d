"""The kubernetes backend in process, against the fake cluster of tests/e2e_k8s: the strict fake
API (tests/support/kubeapi.py) with the CRDs of one agent-sandbox release and AgentCube's,
agent-sandbox's and AgentCube's controllers as fakes, and a kubelet running a real picod per
pod. Every test runs once per release (the package-scoped `release` is parametrized).

Sharing: one cluster and one lifecycle backend per release for the whole directory
(`cluster`, `backend`; the tests run on the package's event loop for that);
each test gets two namespaces of its own (`cluster.tenant`, `cluster.other`), each with the
CodeInterpreter COLD, emptied after the test (the pods' picods stopped) and forgotten by the
shared backend before the next test starts. Tests that change the cluster itself (stop its
warm pools, delete AgentCube's identity) or must be the only lifecycle service running take
a `lone_cluster` of their own. `cluster.backends` starts more backends on the same cluster
(another replica, a restart, other settings), stopped after the test.

What every test is checked on, whatever it asserts itself:
- every POST and PATCH the lifecycle sent carried `fieldValidation=Strict`, and none was
  refused as invalid (400 or 422): the objects it writes have the shape the CRDs demand;
- every object stored validates against its schema (or the built-in kinds' rules).

Pods get loopback addresses 127.102.x.y, free ones only: other suites on this machine run
their fake kubelets in 127.101.x.y.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import functools
import itertools
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import jwt
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from kubernetes.client import ApiClient, Configuration

from e2e_k8s.cluster import ClusterSettings, FakeCluster, install
from e2e_k8s.kubelet import PICOD_PORT
from e2e_k8s.versions import RELEASES, AgentSandbox
from e2e_k8s.warm_pool_controller import WarmPoolController
from extproc.core.backoff import Backoff
from extproc.core.errors import DomainError
from extproc.k8s.identity import http_status
from extproc.k8s.listwatch import KubeObject
from extproc.k8s.resources import Kind, Resources
from extproc.k8s.settings import InformerSettings
from extproc.lifecycle.kubernetes import KubernetesBackend
from extproc.lifecycle.sandboxes import CreateSpec, ListQuery, Sandbox, State
from extproc.lifecycle.settings import KubernetesSettings
from support.kube_builtin import validate_builtin, validate_metadata
from support.kube_schema import prune, validate
from support.kubeapi import FakeApi, Logged, Obj, served

T = TypeVar("T")

SYSTEM = "agentcube-system"  # the gateway's namespace: seed and proof-key Secrets
AGENTCUBE = "agentcube"  # AgentCube's namespace: its router identity Secret
IDENTITY_SECRET = "picod-router-identity"
COLD = "base"  # a CodeInterpreter without a warm pool, in both namespaces of every test
POOLED = "pooled"  # one with a warm pool of one (`warm_pool`, `fill_warm_pool`)
WAIT_S = 30.0  # the longest wait for anything; generous, for a loaded machine
FAST = InformerSettings(
    watch_timeout_s=30,
    connect_timeout_s=1.0,
    backoff=Backoff(initial_s=0.02, max_s=0.1, jitter=0.5),
)
STRICT_WRITES = ("POST", "PATCH")
ALL_STATES = frozenset(State)
# What a test's namespaces may hold, emptied after it (owners first: the rest goes with them).
NAMESPACED = ("sandboxclaims", "sandboxes", "codeinterpreters", "sandboxwarmpools",
              "sandboxtemplates", "secrets", "persistentvolumeclaims", "pods")  # fmt: skip
_namespaces = itertools.count(1)


# --- objects ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """AgentCube's router key pair, as PEM."""

    private_pem: bytes
    public_pem: bytes

    def secret(self, namespace: str = AGENTCUBE) -> Obj:
        """Secret picod-router-identity as AgentCube's router makes it."""
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {"name": IDENTITY_SECRET, "namespace": namespace,
                         "labels": {"app": "agentcube", "component": "router"}},
            "data": {"private.pem": base64.b64encode(self.private_pem).decode(),
                     "public.pem": base64.b64encode(self.public_pem).decode()},
        }  # fmt: skip

    @functools.cached_property
    def signing_key(self) -> rsa.RSAPrivateKey:
        # Loaded once: loading checks the key, which costs more than signing.
        key = serialization.load_pem_private_key(self.private_pem, password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        return key

    def jwt(self, sandbox_id: str) -> str:
        """A JWT as the edge signs it for `sandbox_id`."""
        now = int(time.time())
        claims = {"iss": "agentcube-router", "iat": now, "exp": now + 60, "session_id": sandbox_id}
        return jwt.encode(claims, self.signing_key, algorithm="RS256")


@functools.cache
def identity() -> Identity:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return Identity(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ),
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )


def code_interpreter(name: str, namespace: str, **spec: Any) -> Obj:
    """A CodeInterpreter serving envd only; `spec` adds or replaces fields."""
    template: Obj = {"image": "agentcube-e2b-sandbox:0.1.0", "imagePullPolicy": "IfNotPresent",
                     "environment": [{"name": "TZ", "value": "UTC"}],
                     "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}  # fmt: skip
    return {
        "apiVersion": "runtime.agentcube.volcano.sh/v1alpha1",
        "kind": "CodeInterpreter",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{namespace}-{name}"},
        "spec": {"template": template, "ports": [{"port": 49983, "protocol": "HTTP"}], **spec},
    }


def name_of(sandbox_id: str) -> str:
    return f"e2b-{sandbox_id}"


def is_ready(obj: Obj | None) -> bool:
    conditions = ((obj or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def serialized(obj: Obj) -> str:
    return json.dumps(obj, sort_keys=True)


# --- checks ----------------------------------------------------------------------------------


def invalid_stored_objects(api: FakeApi) -> list[str]:
    """What in the stored objects the schemas (or built-in rules) refuse."""
    problems: list[str] = []
    for plural, objects in api.objects.items():
        resource = api.resources[plural]
        schema = resource.schemas.get(resource.storage) if resource.crd else None
        for (namespace, name), obj in objects.items():
            where = f"{plural} {namespace}/{name}"
            causes = validate_metadata(obj.get("metadata"))
            if schema is not None:
                problems += [f"{where}: unknown {p}" for p in prune(schema, copy.deepcopy(obj))]
                causes += validate(schema, obj)
            if plural == "pods":
                causes += validate_builtin(plural, obj, None)
            problems += [f"{where}: {cause}" for cause in causes]
    return problems


def unstrict_writes(entries: list[Logged]) -> list[str]:
    return [
        f"{entry.method} {entry.plural} {entry.name or ''}: {entry.params}"
        for entry in entries
        if entry.method in STRICT_WRITES and entry.params.get("fieldValidation") != "Strict"
    ]


# --- backends --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Write:
    verb: str
    plural: str
    name: str
    status: int | None  # the HTTP status of a refusal; None when accepted


class RecordingResources(Resources):
    """Resources that remember how each create and patch ended, so a refusal the backend
    swallows (a rollback, the reaper) still fails the test."""

    def __init__(self, client: ApiClient) -> None:
        super().__init__(client)
        self.writes: list[Write] = []
        self.closed = False

    async def _recorded(self, verb: str, kind: Kind, name: str, call: Awaitable[T]) -> T:
        try:
            result = await call
        except DomainError as error:
            self.writes.append(Write(verb, kind.plural, name, http_status(error) or 0))
            raise
        self.writes.append(Write(verb, kind.plural, name, None))
        return result

    async def create(self, kind: Kind, namespace: str, body: KubeObject) -> KubeObject:
        name = str((body.get("metadata") or {}).get("name") or "")
        return await self._recorded("create", kind, name, super().create(kind, namespace, body))

    async def patch(self, kind: Kind, namespace: str, name: str, patch: KubeObject) -> KubeObject:
        return await self._recorded(
            "patch", kind, name, super().patch(kind, namespace, name, patch)
        )


def kube_settings(**overrides: Any) -> KubernetesSettings:
    values: dict[str, Any] = {"namespace": SYSTEM, "identity_namespace": AGENTCUBE,
                              "ready_timeout_s": 20.0}  # fmt: skip
    values.update(overrides)
    return KubernetesSettings(**values)


@dataclass
class Backends:
    """Starts backends on a cluster; stops them and says what they had refused."""

    api: FakeApi
    started: list[tuple[KubernetesBackend, list[asyncio.Task[None]]]] = field(default_factory=list)
    resources: list[RecordingResources] = field(default_factory=list)

    def new(self, clock: Callable[[], float] = time.time, **overrides: Any) -> KubernetesBackend:
        """A backend not started yet (a test that expects its start to fail closes it)."""
        configuration = Configuration(host=self.api.url)
        configuration.retries = 0
        resources = RecordingResources(ApiClient(configuration))
        self.resources.append(resources)
        return KubernetesBackend(
            kube_settings(**overrides), resources, informer_settings=FAST, clock=clock
        )

    async def start(
        self, clock: Callable[[], float] = time.time, **overrides: Any
    ) -> KubernetesBackend:
        backend = self.new(clock, **overrides)
        self.started.append((backend, await backend.start()))
        return backend

    async def stop(self, backend: KubernetesBackend) -> None:
        """Stop one backend (the lifecycle service going away)."""
        for index, (started, tasks) in enumerate(self.started):
            if started is backend:
                del self.started[index]
                await _stop(backend, tasks)
                return

    async def stop_reaping(self, backend: KubernetesBackend) -> None:
        """Stop `backend`'s own expiry (its reaper task), leaving the rest running."""
        for started, tasks in self.started:
            if started is backend:
                for task in tasks:
                    if task.get_name() == "lifecycle-reaper":
                        task.cancel()
                        await asyncio.gather(task, return_exceptions=True)
                        return
        raise AssertionError("no reaper task: was the backend started here?")

    async def stop_all(self) -> None:
        while self.started:
            await _stop(*self.started.pop())
        for resources in self.resources:
            if not resources.closed:
                resources.client.close()  # type: ignore[no-untyped-call]
                resources.closed = True

    def refused(self) -> list[Write]:
        """Writes the API refused as invalid (400: unknown field under Strict; 422: schema)."""
        return [w for r in self.resources for w in r.writes if w.status in (400, 422)]


async def _stop(backend: KubernetesBackend, tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await backend.close()


def client_threads() -> set[threading.Thread]:
    """The threads of the official client's calls and of the informers."""
    return {t for t in threading.enumerate() if t.name.startswith(("informer-", "k8s-api"))}


async def no_client_threads_left(before: set[threading.Thread]) -> None:
    for thread in client_threads() - before:
        await asyncio.to_thread(thread.join, 5.0)
        assert not thread.is_alive(), f"thread {thread.name} still running"


# --- clusters --------------------------------------------------------------------------------


def free_pod_addresses() -> Iterator[str]:
    """127.102.0.1, 127.102.0.2, ...: those where picod's port is free now."""
    for third in range(256):
        for fourth in range(1, 255):
            address = f"127.102.{third}.{fourth}"
            with socket.socket() as probe:
                try:
                    probe.bind((address, PICOD_PORT))
                except OSError:
                    continue
            yield address


# One sequence for every cluster of the run: a lone cluster's kubelet must not pick an
# address the shared one has given a pod whose picod is not listening yet.
POD_ADDRESSES = free_pod_addresses()


@dataclass
class Running:
    """One fake cluster and the backends started on it for its whole life."""

    api: FakeApi
    fake: FakeCluster
    release: AgentSandbox
    backends: Backends


@contextlib.asynccontextmanager
async def running_cluster(root: Path, release: str) -> AsyncIterator[Running]:
    """A fake cluster with `release` and AgentCube's identity Secret in AGENTCUBE."""
    settings = ClusterSettings(
        root=root, agent_sandbox=release, controller_delay_s=0.01, agentcube_retry_s=0.1
    )

    def setup(api: FakeApi) -> None:
        install(api, settings.release)
        api.put("secrets", identity().secret())

    threads = client_threads()
    async with served(setup) as api:
        fake = FakeCluster(api, settings)
        # The kubelet's own addresses (127.101.x.y) are those of the other suites' clusters.
        fake.kubelet._addresses = POD_ADDRESSES
        fake.start()
        backends = Backends(api)
        try:
            yield Running(api, fake, settings.release, backends)
        finally:
            try:
                await backends.stop_all()
            finally:
                await fake.stop()
        await no_client_threads_left(threads)
        assert unstrict_writes(api.log) == []
        assert backends.refused() == []
        assert invalid_stored_objects(api) == []


@dataclass
class Cluster:
    """A test's view of a cluster: its namespaces, its part of the API's log, its backends."""

    api: FakeApi
    fake: FakeCluster
    release: AgentSandbox
    tenant: str
    other: str
    backends: Backends
    log_start: int = 0
    lone: bool = False

    def spec(self, template: str = COLD, **overrides: Any) -> CreateSpec:
        values: dict[str, Any] = {"tenant": self.tenant, "template": template, "timeout_s": 300}
        values.update(overrides)
        return CreateSpec(**values)

    def put_interpreter(self, name: str, **spec: Any) -> None:
        self.api.put("codeinterpreters", code_interpreter(name, self.tenant, **spec))

    def stored(self, plural: str, name: str, namespace: str | None = None) -> Obj | None:
        obj = self.api.objects[plural].get((namespace or self.tenant, name))
        return copy.deepcopy(obj) if obj is not None else None

    def names(self, plural: str, namespace: str | None = None) -> set[str]:
        wanted = namespace or self.tenant
        return {name for ns, name in self.api.objects[plural] if ns == wanted}

    def log(self) -> list[Logged]:
        """The requests the API received since the test started."""
        return self.api.log[self.log_start :]

    def writes(self, plural: str | None = None) -> list[Logged]:
        """POST, PATCH and DELETE requests since the test started (of one plural if given)."""
        return [e for e in self.log() if e.method != "GET" and plural in (None, e.plural)]

    async def stop_warm_pools(self) -> None:
        """From now on warm pools make no sandboxes: every claim finds its pool empty."""
        assert self.lone, "only a lone cluster may be changed for good"
        for controller in self.fake.controllers:
            if isinstance(controller, WarmPoolController):
                await controller.stop()

    async def until(
        self, predicate: Callable[[], T | None], what: str = "", timeout_s: float = WAIT_S
    ) -> T:
        """The first true value of `predicate`, checked after every change of the API (and
        every 0.1 s, for what the kubelet keeps to itself); `what` names it in the failure."""
        changed = asyncio.Event()

        def listener(*_: object) -> None:
            changed.set()

        self.api.listeners.append(listener)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            while True:
                changed.clear()
                if result := predicate():
                    return result
                if loop.time() > deadline:
                    raise AssertionError(f"not true within {timeout_s} s: {what or predicate}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), 0.1)
        finally:
            self.api.listeners.remove(listener)

    async def empty(self, shared: KubernetesBackend | None) -> None:
        """Delete everything in the test's namespaces; return once no pod of them runs and
        `shared` has forgotten their sandboxes."""
        namespaces = (self.tenant, self.other)
        for plural in NAMESPACED:
            for key in [k for k in self.api.objects[plural] if k[0] in namespaces]:
                if key in self.api.objects[plural]:  # not collected with its owner yet
                    self.api.delete(plural, *key)
        kubelet = self.fake.kubelet
        await self.until(
            lambda: not any(ns in namespaces for ns, _ in kubelet.pods), "the test's pods stopped"
        )
        if shared is not None:
            for namespace in namespaces:
                query = ListQuery(tenant=namespace, states=ALL_STATES)

                async def gone(query: ListQuery = query) -> None:
                    while (await shared.list_sandboxes(query)).sandboxes:
                        await asyncio.sleep(0.02)

                await asyncio.wait_for(gone(), WAIT_S)


def view_of(running: Running, *, lone: bool = False) -> Cluster:
    number = next(_namespaces)
    view = Cluster(
        running.api, running.fake, running.release, f"team-{number}", f"team-{number}-b",
        Backends(running.api), log_start=len(running.api.log), lone=lone,
    )  # fmt: skip
    for namespace in (view.tenant, view.other):
        running.api.put("codeinterpreters", code_interpreter(COLD, namespace))
    return view


async def check_test(view: Cluster, refused_before: int, running: Running) -> None:
    await view.backends.stop_all()
    assert unstrict_writes(view.log()) == []
    assert view.backends.refused() == []
    assert len(running.backends.refused()) == refused_before
    assert invalid_stored_objects(view.api) == []


@pytest.fixture(scope="package", params=sorted(RELEASES), ids=lambda r: f"agent-sandbox-{r}")
def release(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def running(release: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    async with running_cluster(tmp_path_factory.mktemp("cluster"), release) as started:
        await started.backends.start()  # the lifecycle service every test shares
        yield started


@pytest_asyncio.fixture(loop_scope="package")
async def cluster(running: Running) -> AsyncIterator[Cluster]:
    """The shared cluster, seen through two namespaces of this test's own."""
    view = view_of(running)
    refused_before = len(running.backends.refused())
    try:
        yield view
    finally:
        await view.backends.stop_all()
        await view.empty(running.backends.started[0][0])
    await check_test(view, refused_before, running)


@pytest_asyncio.fixture(loop_scope="package")
async def lone_cluster(release: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    """A cluster of this test's own, with no lifecycle service running."""
    async with running_cluster(tmp_path / "pods", release) as started:
        view = view_of(started, lone=True)
        view.backends = started.backends
        yield view


@pytest_asyncio.fixture(loop_scope="package")
async def backend(cluster: Cluster, running: Running) -> KubernetesBackend:
    """The shared lifecycle service."""
    return running.backends.started[0][0]


# --- the warm pool ---------------------------------------------------------------------------


def warm_members(cluster: Cluster, pool: str = POOLED) -> list[Obj]:
    """The Sandboxes `pool` currently offers (controlled by it), in name order."""
    members = []
    for (namespace, _), sandbox in sorted(cluster.api.objects["sandboxes"].items()):
        refs = sandbox["metadata"].get("ownerReferences") or []
        if namespace == cluster.tenant and any(
            r.get("controller") and r.get("kind") == "SandboxWarmPool" and r.get("name") == pool
            for r in refs
        ):
            members.append(sandbox)
    return members


async def fill_warm_pool(cluster: Cluster) -> str:
    """CodeInterpreter POOLED with a warm pool of one, once that one is Ready; its name."""
    cluster.put_interpreter(POOLED, warmPoolSize=1)

    def ready_member() -> str | None:
        members = [m for m in warm_members(cluster) if is_ready(m)]
        return str(members[0]["metadata"]["name"]) if members else None

    return await cluster.until(ready_member, "a Ready warm-pool sandbox")


@pytest_asyncio.fixture(loop_scope="package")
async def warm_pool(cluster: Cluster) -> str:
    return await fill_warm_pool(cluster)


# --- picod -----------------------------------------------------------------------------------


async def picod_get(
    sandbox: Sandbox, path: str, *, jwt_for: str | None = None, token: str | None = None
) -> httpx.Response:
    """GET `path` from the sandbox's picod with a JWT naming `jwt_for` and `token`."""
    headers = {}
    if jwt_for is not None:
        headers["Authorization"] = f"Bearer {identity().jwt(jwt_for)}"
    if token is not None:
        headers["X-Access-Token"] = token
    url = f"http://{sandbox.endpoint_host}:{PICOD_PORT}{path}"
    # Plain HTTP: verify=False spares loading the CA bundle, which costs more than the call.
    async with httpx.AsyncClient(timeout=5.0, trust_env=False, verify=False) as client:
        return await client.get(url, headers=headers)


async def picod_envs(sandbox: Sandbox) -> dict[str, str]:
    """The sandbox's env as picod's /envs shows it to the edge (its JWT and the token)."""
    got = await picod_get(
        sandbox, "/envs", jwt_for=sandbox.sandbox_id, token=sandbox.envd_access_token
    )
    assert got.status_code == 200, got.text
    envs: dict[str, str] = got.json()
    return envs
