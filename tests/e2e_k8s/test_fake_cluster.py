"""The stand-ins for agent-sandbox's and AgentCube's controllers and the kubelet behave as the
upstream facts say (notes/agent-sandbox-facts.md), for agent-sandbox 0.4.6 and 0.5.6.

Most tests run the fake cluster in this process (`e2e_k8s.cluster.running`), write objects in
the storage version with the API's in-process `put`, and follow its change listeners, so
orderings (a claim names its Sandbox before the Pod exists) are asserted on the sequence of
writes. The last tests drive `python -m e2e_k8s.cluster` through the official client and the
kubeconfig the gateway uses.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from kubernetes import watch
from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi

from e2e_k8s.cluster import ClusterSettings, running
from e2e_k8s.conftest import (
    SANDBOX_API,
    TENANT,
    Cluster,
    child_env,
    get_sandbox_cr,
    stop_cluster,
    write_kubeconfig,
)
from e2e_k8s.kubelet import PICOD, PICOD_PORT, picod_argv, picod_refuses
from e2e_k8s.objects import (
    CLAIM_UID_LABEL,
    NAME_HASH_LABEL,
    POD_NAME_ANNOTATION,
    SANDBOX_NAME_LABEL,
    Obj,
    condition,
    controller_of,
    now,
)
from e2e_k8s.versions import RELEASES
from extproc.k8s.client import api_client
from support.kube_builtin import validate_builtin, validate_metadata
from support.kube_schema import prune, validate
from support.kubeapi import FakeApi
from support.processes import wait_until

WAIT_S = 15.0
NS = "team-a"
T = TypeVar("T")
RELEASE_NAMES = sorted(RELEASES)


# --- harness -----------------------------------------------------------------------------------


@pytest.fixture(params=RELEASE_NAMES)
def release(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@contextlib.asynccontextmanager
async def fake_cluster(root: Path, release: str, **settings: Any) -> AsyncIterator[FakeApi]:
    defaults: dict[str, Any] = {"controller_delay_s": 0.02, "agentcube_retry_s": 0.1}
    cluster = ClusterSettings(root=root / "pods", agent_sandbox=release, **defaults | settings)
    async with running(cluster) as api:
        yield api
        assert nonconforming(api) == []


def nonconforming(api: FakeApi) -> list[str]:
    """What in the stored objects the schemas would refuse: the controllers write with the
    in-process `put`, which does not validate, so their output is checked here instead."""
    problems: list[str] = []
    for plural, objects in api.objects.items():
        resource = api.resources[plural]
        schema = resource.schemas.get(resource.storage) if resource.crd else None
        for (namespace, name), obj in objects.items():
            where = f"{plural} {namespace}/{name}"
            causes = validate_metadata(obj.get("metadata"))
            if schema is not None:
                problems += [
                    f"{where}: unknown {path}" for path in prune(schema, copy.deepcopy(obj))
                ]
                causes += validate(schema, obj)
            if plural == "pods":
                causes += validate_builtin(plural, obj, None)
            problems += [f"{where}: {cause}" for cause in causes]
    return problems


async def until(api: FakeApi, predicate: Callable[[], T | None], timeout_s: float = WAIT_S) -> T:
    """The first true value of `predicate`, checked after every change of the API."""
    changed = asyncio.Event()

    def listener(*_: object) -> None:
        changed.set()

    api.listeners.append(listener)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    try:
        while True:
            changed.clear()
            if result := predicate():
                return result
            if loop.time() > deadline:
                raise AssertionError(f"not true within {timeout_s} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), 0.1)
    finally:
        api.listeners.remove(listener)


class Recorder:
    """Every change of the API, in the order the API made them: (plural, event, name, obj)."""

    def __init__(self, api: FakeApi) -> None:
        self.events: list[tuple[str, str, str, Obj]] = []
        api.listeners.append(self.record)

    def record(self, plural: str, event: str, obj: Obj) -> None:
        self.events.append((plural, event, obj["metadata"]["name"], obj))

    def first(self, test: Callable[[str, str, str, Obj], bool]) -> int:
        return next(i for i, event in enumerate(self.events) if test(*event))


def stored(api: FakeApi, plural: str, name: str, namespace: str = NS) -> Obj | None:
    return api.objects.get(plural, {}).get((namespace, name))


def ready_pod(api: FakeApi, name: str) -> Obj | None:
    pod = stored(api, "pods", name)
    if pod is None or condition(pod.get("status") or {}, "Ready") is None:
        return None
    return pod if condition(pod["status"], "Ready") == {"type": "Ready", "status": "True"} else None


def sandbox_ready(api: FakeApi, name: str) -> Obj | None:
    sandbox = stored(api, "sandboxes", name)
    ready = condition((sandbox or {}).get("status") or {}, "Ready") or {}
    return sandbox if ready.get("status") == "True" else None


def pod_template(
    *, env: list[Obj] | None = None, args: tuple[str, ...] = ("--no-auth",), **meta: Any
) -> Obj:
    container: Obj = {"name": "picod", "image": "agentcube-e2b-sandbox", "args": list(args)}
    container["env"] = env or []
    return {"metadata": dict(meta), "spec": {"containers": [container]}}


def sandbox_obj(release: str, name: str, template: Obj, **spec: Any) -> Obj:
    running_spec = RELEASES[release].running_spec()
    return {
        "apiVersion": RELEASES[release].sandbox_api_version,
        "kind": "Sandbox",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}"},
        "spec": {"podTemplate": template, **running_spec, **spec},
    }


def extension_obj(release: str, kind: str, name: str, spec: Obj) -> Obj:
    return {
        "apiVersion": RELEASES[release].extensions_api_version,
        "kind": kind,
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}"},
        "spec": spec,
    }


def put_template_and_pool(api: FakeApi, release: str, template: Obj, replicas: int) -> None:
    """SandboxTemplate "tpl" with `template` and SandboxWarmPool "pool" of it."""
    template_spec = {"podTemplate": template}
    pool_spec = {"replicas": replicas, "sandboxTemplateRef": {"name": "tpl"}}
    api.put("sandboxtemplates", extension_obj(release, "SandboxTemplate", "tpl", template_spec))
    api.put("sandboxwarmpools", extension_obj(release, "SandboxWarmPool", "pool", pool_spec))


def claim_obj(release: str, name: str, **spec: Any) -> Obj:
    """A claim on template "tpl" (0.4.6) or warm pool "pool" (0.5.6)."""
    source: Obj = {"sandboxTemplateRef": {"name": "tpl"}}
    if RELEASES[release].claims_name_a_pool:
        source = {"warmPoolRef": {"name": "pool"}}
    return extension_obj(release, "SandboxClaim", name, {**source, **spec})


def secret_obj(name: str, data: dict[str, str], namespace: str = NS) -> Obj:
    encoded = {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}
    metadata = {"name": name, "namespace": namespace, "uid": f"uid-{name}"}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "data": encoded}


def picod_url(pod: Obj) -> str:
    return f"http://{pod['status']['podIP']}:{PICOD_PORT}"


def later(seconds: float) -> str:
    """RFC 3339 with microseconds: whole seconds would put a near time in the past."""
    return (now() + timedelta(seconds=seconds)).isoformat()


# A pod that can never start: its Secret is never created. Pods that stay Pending keep the
# tests that are about objects free of picod processes.
BLOCKED = pod_template(
    env=[{"name": "X", "valueFrom": {"secretKeyRef": {"name": "never", "key": "x"}}}]
)


# --- agent-sandbox: Sandbox -> Pod -------------------------------------------------------------


async def test_the_pod_is_named_after_its_sandbox_and_runs_picod_until_the_sandbox_goes(
    tmp_path: Path, release: str
) -> None:
    template = pod_template(labels={"app": "demo"}, annotations={"note": "kept"})
    async with fake_cluster(tmp_path, release) as api:
        api.put("sandboxes", sandbox_obj(release, "box", template))
        pod = await until(api, lambda: ready_pod(api, "box"))
        assert pod["metadata"]["labels"]["app"] == "demo"
        assert NAME_HASH_LABEL in pod["metadata"]["labels"]
        assert pod["metadata"]["annotations"] == {"note": "kept"}
        owner = controller_of(pod) or {}
        assert (owner["kind"], owner["name"], owner["uid"]) == ("Sandbox", "box", "uid-box")
        assert owner["apiVersion"] == RELEASES[release].sandbox_api_version
        sandbox = await until(api, lambda: sandbox_ready(api, "box"))
        assert sandbox["metadata"]["annotations"][POD_NAME_ANNOTATION] == "box"
        assert sandbox["status"]["podIPs"] == [pod["status"]["podIP"]]
        async with httpx.AsyncClient(base_url=picod_url(pod)) as picod:
            assert (await picod.get("/health")).status_code == 204

        api.delete("sandboxes", NS, "box")  # the garbage collector takes the Pod
        await until(api, lambda: stored(api, "pods", "box") is None)
        ip = pod["status"]["podIP"]
        await until(api, lambda: picod_refuses(ip))


async def test_secret_key_ref_keeps_the_pod_pending_until_the_secret_and_key_exist(
    tmp_path: Path, release: str
) -> None:
    ref = {"secretKeyRef": {"name": "box-token", "key": "token"}}
    env = [{"name": "AGENTCUBE_E2B_PICOD_ACCESS_TOKEN", "valueFrom": ref}]
    async with fake_cluster(tmp_path, release) as api:
        api.put("sandboxes", sandbox_obj(release, "box", pod_template(env=env, args=())))

        def waiting(message: str) -> Obj | None:
            pod = stored(api, "pods", "box")
            statuses = ((pod or {}).get("status") or {}).get("containerStatuses") or [{}]
            state = statuses[0].get("state", {}).get("waiting") or {}
            return pod if state.get("message") == message else None

        pod = await until(api, lambda: waiting('secret "box-token" not found'))
        assert pod["status"]["phase"] == "Pending"
        state = pod["status"]["containerStatuses"][0]["state"]["waiting"]
        assert state["reason"] == "CreateContainerConfigError"
        assert condition(pod["status"], "Ready") == {"type": "Ready", "status": "False"}

        api.put("secrets", secret_obj("box-token", {"other": "x"}))
        await until(api, lambda: waiting(f"couldn't find key token in Secret {NS}/box-token"))
        assert not sandbox_ready(api, "box")

        api.put("secrets", secret_obj("box-token", {"token": "sesame"}))
        pod = await until(api, lambda: ready_pod(api, "box"))
        async with httpx.AsyncClient(base_url=picod_url(pod)) as picod:
            assert (await picod.get("/envs")).status_code == 401
            envs = await picod.get("/envs", headers={"X-Access-Token": "sesame"})
            assert envs.status_code == 200


@pytest.mark.parametrize("volume", [True, False], ids=["volume", "no-volume"])
async def test_scale_down_deletes_the_pod_and_a_volume_claim_keeps_the_home(
    tmp_path: Path, release: str, volume: bool
) -> None:
    spec: Obj = {}
    if volume:
        pvc_spec = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
        spec["volumeClaimTemplates"] = [{"metadata": {"name": "workspace"}, "spec": pvc_spec}]
    # picod's state directory is a container path: it follows the volume mounted there
    template = pod_template(env=[{"name": "AGENTCUBE_E2B_PICOD_STATE_DIR", "value": "/w/.picod"}])
    template["spec"]["containers"][0]["volumeMounts"] = [{"name": "workspace", "mountPath": "/w"}]
    versions = RELEASES[release]
    async with fake_cluster(tmp_path, release) as api:
        api.put("sandboxes", sandbox_obj(release, "box", template, **spec))
        first = await until(api, lambda: ready_pod(api, "box"))
        async with httpx.AsyncClient(base_url=picod_url(first)) as picod:
            written = await picod.post("/files", params={"path": "note.txt"}, content=b"kept")
            assert written.status_code == 200, written.text
        first_state = env_of(api_pod_process(tmp_path, first))["AGENTCUBE_E2B_PICOD_STATE_DIR"]
        assert first_state.startswith(str(tmp_path)) and first_state.endswith("/.picod")

        down = dict(stored(api, "sandboxes", "box") or {})
        down["spec"] = {**down["spec"], **versions.running_spec(False)}
        api.put("sandboxes", down)
        await until(api, lambda: stored(api, "pods", "box") is None)
        sandbox = stored(api, "sandboxes", "box") or {}
        assert (condition(sandbox.get("status") or {}, "Ready") or {})["status"] == "False"
        await until(api, lambda: picod_refuses(first["status"]["podIP"]))
        assert (stored(api, "persistentvolumeclaims", "workspace-box") is not None) is volume

        up = dict(stored(api, "sandboxes", "box") or {})
        up["spec"] = {**up["spec"], **versions.running_spec(True)}
        api.put("sandboxes", up)
        second = await until(api, lambda: ready_pod(api, "box"))
        assert second["metadata"]["uid"] != first["metadata"]["uid"]
        async with httpx.AsyncClient(base_url=picod_url(second)) as picod:
            read = await picod.get("/files", params={"path": "note.txt"})
        second_state = env_of(api_pod_process(tmp_path, second))["AGENTCUBE_E2B_PICOD_STATE_DIR"]
        if volume:
            assert (read.status_code, read.content) == (200, b"kept")
            assert second_state == first_state
        else:
            assert read.status_code == 404
            assert second_state != first_state


# --- shutdownTime ------------------------------------------------------------------------------


async def test_shutdown_time_with_delete_deletes_the_sandbox_and_its_pod(
    tmp_path: Path, release: str
) -> None:
    async with fake_cluster(tmp_path, release) as api:
        spec = {"shutdownTime": later(3600), "shutdownPolicy": "Delete"}
        api.put("sandboxes", sandbox_obj(release, "box", BLOCKED, **spec))
        await until(api, lambda: stored(api, "pods", "box"))
        # moved earlier: the new time is the one that counts
        moved = dict(stored(api, "sandboxes", "box") or {})
        moved["spec"] = {**moved["spec"], "shutdownTime": later(0.3)}
        api.put("sandboxes", moved)
        await until(api, lambda: stored(api, "sandboxes", "box") is None)
        assert stored(api, "pods", "box") is None


async def test_shutdown_time_with_retain_deletes_only_the_pod(tmp_path: Path, release: str) -> None:
    async with fake_cluster(tmp_path, release) as api:
        api.put("sandboxes", sandbox_obj(release, "box", BLOCKED, shutdownTime=later(1.0)))
        await until(api, lambda: stored(api, "pods", "box"))

        def expired() -> Obj | None:
            sandbox = stored(api, "sandboxes", "box") or {}
            ready = condition(sandbox.get("status") or {}, "Ready") or {}
            return sandbox if ready.get("reason") == "SandboxExpired" else None

        sandbox = await until(api, expired)
        assert stored(api, "pods", "box") is None
        assert sandbox["status"]["conditions"][-1]["status"] == "False"


async def test_a_shutdown_time_moved_later_is_not_honoured_at_the_old_time(
    tmp_path: Path, release: str
) -> None:
    async with fake_cluster(tmp_path, release) as api:
        spec = {"shutdownTime": later(0.4), "shutdownPolicy": "Delete"}
        api.put("sandboxes", sandbox_obj(release, "box", BLOCKED, **spec))
        moved = dict(stored(api, "sandboxes", "box") or {})
        moved["spec"] = {**moved["spec"], "shutdownTime": later(3600)}
        api.put("sandboxes", moved)
        await asyncio.sleep(1.0)  # well past the old time
        assert stored(api, "sandboxes", "box") is not None
        assert stored(api, "pods", "box") is not None


# --- claims and warm pools ---------------------------------------------------------------------


async def test_a_claim_on_an_empty_pool_names_its_sandbox_before_the_pod_exists(
    tmp_path: Path, release: str
) -> None:
    extra = {"labels": {"e2b.agentcube.io/sandbox-id": "abc"}, "annotations": {"a": "b"}}
    async with fake_cluster(tmp_path, release, controller_delay_s=0.05) as api:
        put_template_and_pool(api, release, pod_template(labels={"from": "template"}), 0)
        events = Recorder(api)
        api.put("sandboxclaims", claim_obj(release, "claim", additionalPodMetadata=extra))
        pod = await until(api, lambda: ready_pod(api, "claim"))

        named = events.first(
            lambda plural, _, name, obj: (
                plural == "sandboxclaims"
                and ((obj.get("status") or {}).get("sandbox") or {}).get("name") == "claim"
            )
        )
        created = events.first(lambda p, e, n, _: (p, e, n) == ("sandboxes", "ADDED", "claim"))
        pod_added = events.first(lambda p, e, n, _: (p, e, n) == ("pods", "ADDED", "claim"))
        assert created < named < pod_added, events.events

        sandbox = stored(api, "sandboxes", "claim") or {}
        owner = controller_of(sandbox) or {}
        assert (owner["kind"], owner["uid"]) == ("SandboxClaim", "uid-claim")
        assert sandbox["metadata"]["labels"][CLAIM_UID_LABEL] == "uid-claim"
        assert sandbox["metadata"]["labels"][SANDBOX_NAME_LABEL] == "claim"
        labels = pod["metadata"]["labels"]
        assert labels["e2b.agentcube.io/sandbox-id"] == "abc"
        assert labels["from"] == "template"
        assert pod["metadata"]["annotations"]["a"] == "b"

        def claim_ready() -> bool:
            claim = stored(api, "sandboxclaims", "claim") or {}
            return (condition(claim.get("status") or {}, "Ready") or {}).get("status") == "True"

        await until(api, claim_ready)

        api.delete("sandboxclaims", NS, "claim")  # its Sandbox and Pod go with it
        await until(api, lambda: stored(api, "sandboxes", "claim") is None)
        await until(api, lambda: stored(api, "pods", "claim") is None)


async def test_a_claim_adopts_a_ready_warm_sandbox_and_the_pool_replenishes(
    tmp_path: Path, release: str
) -> None:
    extra = {"labels": {"e2b.agentcube.io/sandbox-id": "abc"}}
    async with fake_cluster(tmp_path, release) as api:
        put_template_and_pool(api, release, pod_template(), 1)

        def pool_ready() -> Obj | None:
            pool = stored(api, "sandboxwarmpools", "pool") or {}
            return pool if (pool.get("status") or {}).get("readyReplicas") == 1 else None

        await until(api, pool_ready)
        warm = [obj for (_, name), obj in api.objects["sandboxes"].items()]
        assert len(warm) == 1
        warm_name = warm[0]["metadata"]["name"]
        assert warm_name.startswith("pool-") and len(warm_name) == len("pool-") + 5

        api.put("sandboxclaims", claim_obj(release, "claim", additionalPodMetadata=extra))

        def bound() -> str | None:
            claim = stored(api, "sandboxclaims", "claim") or {}
            name: str | None = ((claim.get("status") or {}).get("sandbox") or {}).get("name")
            return name

        assert await until(api, bound) == warm_name
        sandbox = stored(api, "sandboxes", warm_name) or {}
        refs = sandbox["metadata"]["ownerReferences"]
        assert [(r["kind"], r["uid"]) for r in refs] == [("SandboxClaim", "uid-claim")]
        assert sandbox["metadata"]["labels"][CLAIM_UID_LABEL] == "uid-claim"
        assert sandbox["metadata"]["labels"][SANDBOX_NAME_LABEL] == warm_name
        assert sandbox["spec"]["podTemplate"]["metadata"]["labels"] == extra["labels"]
        pod = stored(api, "pods", warm_name) or {}
        assert pod["metadata"]["labels"]["e2b.agentcube.io/sandbox-id"] == "abc"
        assert stored(api, "sandboxes", "claim") is None  # adopted, not created

        def members() -> list[str]:
            return [
                name
                for (_, name), obj in api.objects["sandboxes"].items()
                if (controller_of(obj) or {}).get("kind") == "SandboxWarmPool"
            ]

        [replacement] = await until(api, members)
        assert replacement != warm_name
        await until(api, lambda: ready_pod(api, replacement))
        await until(api, pool_ready)


async def test_only_0_4_6_adopts_a_warm_sandbox_that_is_not_ready(
    tmp_path: Path, release: str
) -> None:
    async with fake_cluster(tmp_path, release) as api:
        put_template_and_pool(api, release, BLOCKED, 1)
        warm = await until(api, lambda: next(iter(api.objects["sandboxes"]), None))
        await until(api, lambda: stored(api, "pods", warm[1]))
        api.put("sandboxclaims", claim_obj(release, "claim"))

        def bound() -> str | None:
            claim = stored(api, "sandboxclaims", "claim") or {}
            name: str | None = ((claim.get("status") or {}).get("sandbox") or {}).get("name")
            return name

        expected = warm[1] if RELEASES[release].adopts_before_ready else "claim"
        assert await until(api, bound) == expected


async def test_a_claim_whose_source_is_missing_stays_unbound(tmp_path: Path, release: str) -> None:
    versions = RELEASES[release]
    async with fake_cluster(tmp_path, release) as api:
        claim = claim_obj(release, "claim")
        if versions.claims_name_a_pool:  # what a v1alpha1 claim converts to on 0.5.x
            claim["spec"] = {"warmPoolRef": {"name": "shadow-pool-tpl"}}
            put_template_and_pool(api, release, BLOCKED, 0)
        api.put("sandboxclaims", claim)

        def unbound() -> Obj | None:
            obj = stored(api, "sandboxclaims", "claim") or {}
            ready = condition(obj.get("status") or {}, "Ready") or {}
            return ready if ready.get("status") == "False" else None

        ready = await until(api, unbound)
        expected = "WarmPoolNotFound" if versions.claims_name_a_pool else "TemplateNotFound"
        assert ready["reason"] == expected
        assert "sandbox" not in (stored(api, "sandboxclaims", "claim") or {})["status"]
        assert stored(api, "sandboxes", "claim") is None

        if not versions.claims_name_a_pool:  # the template appears: the claim binds
            put_template_and_pool(api, release, BLOCKED, 0)
            await until(api, lambda: stored(api, "sandboxes", "claim"))


@pytest.mark.parametrize("policy", ["Delete", "DeleteForeground", "Retain"])
async def test_the_claim_lifecycle_expires_the_claim_or_only_its_pod(
    tmp_path: Path, release: str, policy: str
) -> None:
    lifecycle = {"shutdownTime": later(1.0), "shutdownPolicy": policy}
    async with fake_cluster(tmp_path, release) as api:
        put_template_and_pool(api, release, BLOCKED, 0)
        api.put("sandboxclaims", claim_obj(release, "claim", lifecycle=lifecycle))
        await until(api, lambda: stored(api, "pods", "claim"))
        if policy != "Retain":
            await until(api, lambda: stored(api, "sandboxclaims", "claim") is None)
            await until(api, lambda: stored(api, "sandboxes", "claim") is None)
            assert stored(api, "pods", "claim") is None
            return

        def claim_expired() -> Obj | None:
            claim = stored(api, "sandboxclaims", "claim") or {}
            ready = condition(claim.get("status") or {}, "Ready") or {}
            return claim if ready.get("reason") == "ClaimExpired" else None

        await until(api, claim_expired)
        await until(api, lambda: stored(api, "pods", "claim") is None)
        assert stored(api, "sandboxes", "claim") is not None


# --- AgentCube's CodeInterpreter controller ----------------------------------------------------


def key_pair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


def interpreter(name: str, warm: int, auth_mode: str = "picod") -> Obj:
    template = {
        "image": "agentcube-e2b-sandbox:0.1.0",
        "command": ["/usr/local/bin/agentcube-e2b", "picod"],
        "args": ["--no-auth"] if auth_mode == "none" else [],
        "environment": [{"name": "GREETING", "value": "hi"}],
        "resources": {"limits": {"cpu": "1"}},
        "labels": {"team": "a"},
    }
    return {
        "apiVersion": "runtime.agentcube.volcano.sh/v1alpha1",
        "kind": "CodeInterpreter",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}"},
        "spec": {
            "template": template,
            "ports": [{"port": 49983, "protocol": "HTTP", "pathPrefix": "/"}],
            "warmPoolSize": warm,
            "sessionTimeout": "15m",
            "maxSessionDuration": "8h",
            "authMode": auth_mode,
        },
    }


def env_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(entry.decode().partition("=")[::2] for entry in raw if entry)


async def test_code_interpreter_controller_waits_for_agentcubes_identity_then_builds_the_pool(
    tmp_path: Path, release: str
) -> None:
    private, public = key_pair()
    versions = RELEASES[release]
    async with fake_cluster(tmp_path, release, agentcube_namespace="ac") as api:
        api.put("codeinterpreters", interpreter("ci", warm=1))
        # ours, in another namespace: not AgentCube's identity
        api.put("secrets", secret_obj("picod-router-identity", {"public.pem": "x"}, "elsewhere"))
        retries = Recorder(api)
        await asyncio.sleep(0.5)  # five retries at 0.1 s
        assert stored(api, "sandboxtemplates", "ci") is None
        assert stored(api, "sandboxwarmpools", "ci") is None
        assert [e for e in retries.events if e[0] != "secrets"] == []

        identity = {"private.pem": private, "public.pem": public}
        api.put("secrets", secret_obj("picod-router-identity", identity, "ac"))
        template = await until(api, lambda: stored(api, "sandboxtemplates", "ci"))
        pool = await until(api, lambda: stored(api, "sandboxwarmpools", "ci"))
        for obj in (template, pool):
            assert obj["apiVersion"] == versions.extensions_api_version
            assert (controller_of(obj) or {})["uid"] == "uid-ci"
        assert pool["spec"] == {"replicas": 1, "sandboxTemplateRef": {"name": "ci"}}
        pod_spec = template["spec"]["podTemplate"]["spec"]
        [container] = pod_spec["containers"]
        assert container["name"] == "codeinterpreter"
        assert container["image"] == "agentcube-e2b-sandbox:0.1.0"
        assert container["command"] == ["/usr/local/bin/agentcube-e2b", "picod"]
        assert container["ports"] == [{"containerPort": 49983, "protocol": "TCP"}]
        assert container["resources"] == {"limits": {"cpu": "1"}}
        assert container["env"] == [
            {"name": "GREETING", "value": "hi"},
            {"name": "PICOD_AUTH_PUBLIC_KEY", "value": public},
        ]
        assert template["spec"]["podTemplate"]["metadata"] == {"labels": {"team": "a"}}

        # the warm pod runs picod with AgentCube's key: JWT auth on, no sandbox id, no token
        def warm_pod() -> Obj | None:
            for (_, name), obj in api.objects["sandboxes"].items():
                if (controller_of(obj) or {}).get("kind") == "SandboxWarmPool":
                    return ready_pod(api, name)
            return None

        pod = await until(api, warm_pod)
        async with httpx.AsyncClient(base_url=picod_url(pod)) as picod:
            assert (await picod.get("/envs")).status_code == 401
        process = api_pod_process(tmp_path, pod)
        environment = env_of(process)
        assert environment["PICOD_AUTH_PUBLIC_KEY"] == public
        assert "AGENTCUBE_E2B_PICOD_SANDBOX_ID" not in environment
        assert "AGENTCUBE_E2B_PICOD_ACCESS_TOKEN" not in environment

        ci = dict(stored(api, "codeinterpreters", "ci") or {})
        assert ci["status"]["ready"] is True
        ci["spec"] = {**ci["spec"], "warmPoolSize": 0}
        api.put("codeinterpreters", ci)
        await until(api, lambda: stored(api, "sandboxtemplates", "ci") is None)
        await until(api, lambda: stored(api, "sandboxwarmpools", "ci") is None)
        await until(api, lambda: not api.objects["sandboxes"])


async def test_code_interpreter_with_auth_mode_none_gets_no_key(
    tmp_path: Path, release: str
) -> None:
    _, public = key_pair()
    async with fake_cluster(tmp_path, release) as api:
        api.put("secrets", secret_obj("picod-router-identity", {"public.pem": public}, "agentcube"))
        api.put("codeinterpreters", interpreter("open", warm=2, auth_mode="none"))
        template = await until(api, lambda: stored(api, "sandboxtemplates", "open"))
        [container] = template["spec"]["podTemplate"]["spec"]["containers"]
        assert [e["name"] for e in container["env"]] == ["GREETING"]
        pool = await until(api, lambda: stored(api, "sandboxwarmpools", "open"))
        assert pool["spec"]["replicas"] == 2


def api_pod_process(root: Path, pod: Obj) -> int:
    """The pid of the picod serving `pod` (its argv names the pod's address)."""
    address = f"{pod['status']['podIP']}:{PICOD_PORT}"
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if address.encode() in argv and str(root).encode() in b" ".join(argv):
                return int(entry.name)
    raise AssertionError(f"no picod for {address}")


# --- the cluster process, through the official client ------------------------------------------


def _sandbox(name: str, env: list[dict[str, Any]], args: list[str]) -> dict[str, Any]:
    labels = {"e2b.agentcube.io/sandbox-id": name, "app.kubernetes.io/managed-by": "test"}
    return {
        "apiVersion": "/".join(SANDBOX_API[:2]),
        "kind": "Sandbox",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "podTemplate": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "picod", "image": "x", "env": env, "args": args}]},
            }
        },
    }


def _ready_pod_ip(kube: ApiClient, name: str) -> str:
    """The pod's IP once a watch event shows it Ready (the way the edge learns it)."""
    stream = watch.Watch()  # type: ignore[no-untyped-call]
    for event in stream.stream(  # type: ignore[no-untyped-call]
        CoreV1Api(kube).list_namespaced_pod,
        TENANT,
        label_selector=f"e2b.agentcube.io/sandbox-id={name}",
        _request_timeout=WAIT_S,
    ):
        pod = event["object"]
        conditions = {c.type: c.status for c in pod.status.conditions or []}
        if conditions.get("Ready") == "True" and pod.status.pod_ip:
            stream.stop()  # type: ignore[no-untyped-call]
            ip: str = pod.status.pod_ip
            return ip
    raise AssertionError(f"pod of {name} never became Ready")


def test_sandbox_gets_a_ready_pod_serving_picod_and_delete_stops_it(
    cluster: Cluster, kube: ApiClient
) -> None:
    name = f"e2b-{uuid.uuid4().hex[:12]}"
    secret: Any = {"apiVersion": "v1", "kind": "Secret"}
    secret["metadata"] = {"name": f"{name}-token"}
    secret["data"] = {"token": base64.b64encode(b"sesame").decode()}
    CoreV1Api(kube).create_namespaced_secret(TENANT, secret)
    token_ref = {"secretKeyRef": {"name": f"{name}-token", "key": "token"}}
    env: list[dict[str, Any]] = [
        {"name": "AGENTCUBE_E2B_PICOD_ACCESS_TOKEN", "valueFrom": token_ref},
        {"name": "AGENTCUBE_E2B_PICOD_SANDBOX_ID", "value": name},
    ]
    custom = CustomObjectsApi(kube)
    custom.create_namespaced_custom_object(
        *SANDBOX_API[:2], TENANT, SANDBOX_API[2], _sandbox(name, env, ["--env", "GREETING=hi"])
    )

    ip = _ready_pod_ip(kube, name)
    assert ip.startswith("127.101.")
    with httpx.Client(base_url=f"http://{ip}:49983", timeout=5) as picod:
        assert picod.get("/health").status_code == 204
        assert picod.get("/envs").status_code == 401
        envs = picod.get("/envs", headers={"X-Access-Token": "sesame"})
        assert envs.status_code == 200
        assert envs.json()["GREETING"] == "hi"

    def sandbox_ready() -> bool:
        # the controller marks the Sandbox Ready on its next reconcile after the pod's
        # readiness, as upstream does: a moment after the pod, not with it
        status = (get_sandbox_cr(kube, TENANT, name) or {}).get("status", {})
        ready = [c for c in status.get("conditions", []) if c["type"] == "Ready"]
        return bool(ready) and ready[0]["status"] == "True"

    wait_until(sandbox_ready, WAIT_S, interval_s=0.02)

    custom.delete_namespaced_custom_object(*SANDBOX_API[:2], TENANT, SANDBOX_API[2], name)
    wait_until(lambda: picod_refuses(ip), WAIT_S, interval_s=0.02)
    selector = f"e2b.agentcube.io/sandbox-id={name}"
    wait_until(
        lambda: not CoreV1Api(kube).list_namespaced_pod(TENANT, label_selector=selector).items,
        WAIT_S,
        interval_s=0.02,
    )
    CoreV1Api(kube).delete_namespaced_secret(f"{name}-token", TENANT)


@contextlib.contextmanager
def cluster_process(directory: Path, *flags: str) -> Iterator[Cluster]:
    """`python -m e2e_k8s.cluster` with `flags`, stopped (and checked clean) on exit."""
    root = directory / "pods"
    root.mkdir(parents=True)
    log = directory / "cluster.log"
    argv = [sys.executable, "-m", "e2e_k8s.cluster", "--root", str(root), *flags]
    with log.open("wb") as err:
        process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=child_env(),
            start_new_session=True,
        )
    assert process.stdout is not None
    line = process.stdout.readline().decode().split()
    url = f"http://127.0.0.1:{line[1]}" if line[:1] == ["listening"] else ""
    release = flags[flags.index("--agent-sandbox") + 1] if "--agent-sandbox" in flags else "0.4.6"
    running_cluster = Cluster(
        url, write_kubeconfig(directory / "kubeconfig", url), root, log, process, release,
        directory / "images.json",  # read only with --images among `flags`
    )  # fmt: skip
    try:
        assert url, log.read_text()[-4000:]
        yield running_cluster
    finally:
        stop_cluster(running_cluster)


def test_the_cluster_process_takes_the_release_agentcubes_namespace_and_delay(
    tmp_path: Path,
) -> None:
    """0.5.6 with AgentCube in namespace "ac": a CodeInterpreter's warm pool, read as
    v1beta1 through the client, fills with a Ready sandbox."""
    _, public = key_pair()
    preload = [
        {
            "plural": "secrets",
            "object": secret_obj("picod-router-identity", {"public.pem": public}, "ac"),
        },
        {"plural": "codeinterpreters", "object": interpreter("ci", warm=1)},
    ]
    (tmp_path / "preload.json").write_text(json.dumps(preload))
    flags = ["--agent-sandbox", "0.5.6", "--agentcube-namespace", "ac"]
    flags += ["--controller-delay", "0.01", "--preload", str(tmp_path / "preload.json")]
    with cluster_process(tmp_path, *flags) as cluster, api_client(cluster.kubeconfig) as kube:
        custom = CustomObjectsApi(kube)

        def pool() -> dict[str, Any] | None:
            obj: Any = custom.get_namespaced_custom_object(
                "extensions.agents.x-k8s.io", "v1beta1", NS, "sandboxwarmpools", "ci"
            )
            return obj if (obj.get("status") or {}).get("readyReplicas") == 1 else None

        wait_until(lambda: _exists(pool), WAIT_S)
        listed: Any = custom.list_namespaced_custom_object(
            "agents.x-k8s.io", "v1beta1", NS, "sandboxes"
        )
        sandboxes = listed["items"]
        assert [s["spec"]["operatingMode"] for s in sandboxes] == ["Running"]


def _exists(read: Callable[[], object]) -> bool:
    from kubernetes.client.exceptions import ApiException

    try:
        return bool(read())
    except ApiException as error:
        if error.status == 404:
            return False
        raise


def test_picod_flags_come_from_the_container_with_address_and_home_of_the_pod() -> None:
    home = Path("/tmp/pod/home")
    container = {
        "command": ["/usr/local/bin/agentcube-e2b", "picod"],
        "args": ["--listen", "0.0.0.0:49983", "--home=/home/user", "--sandbox-id", "abc"],
    }
    assert picod_argv(container, "127.101.0.9", home) == [
        *PICOD,
        "--sandbox-id",
        "abc",
        "--listen",
        "127.101.0.9:49983",
        "--home",
        str(home),
    ]
    # an image entrypoint: the args are picod's flags
    assert picod_argv({"args": ["--no-auth"]}, "127.101.0.9", home)[len(PICOD)] == "--no-auth"
    # a state directory is a path in the container: mapped to the host, both spellings
    args = {"args": ["--state-dir", "/var/lib/picod", "--state-dir=/x", "--no-auth"]}
    mapped = picod_argv(args, "127.101.0.9", home, lambda path: f"/host{path}")
    assert mapped[len(PICOD) : len(PICOD) + 4] == [
        "--state-dir",
        "/host/var/lib/picod",
        "--state-dir=/host/x",
        "--no-auth",
    ]
