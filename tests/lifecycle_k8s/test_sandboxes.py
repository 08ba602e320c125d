"""Create, Get, Kill of the kubernetes backend against the fake cluster, cold (a Sandbox and its
Secret) and warm (a SandboxClaim on AgentCube's warm pool, with a ready pool sandbox and with
an empty pool): the exact writes, the objects they leave, what the pod reads, picod's binding,
and what garbage collection takes with a killed sandbox."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from extproc.core.errors import InvalidArgument, NotFound, Unimplemented
from extproc.core.tokens import access_token
from extproc.k8s import object_proof
from extproc.lifecycle.kubernetes import KubernetesBackend
from extproc.lifecycle.sandboxes import Sandbox, State
from support.kubeapi import Logged, Obj

from .conftest import (
    COLD,
    POOLED,
    Cluster,
    identity,
    name_of,
    picod_envs,
    picod_get,
    serialized,
)

pytestmark = pytest.mark.asyncio(loop_scope="package")

ID_LABEL = "e2b.agentcube.io/sandbox-id"
TEMPLATE_LABEL = "e2b.agentcube.io/template"
MANAGED = {"app.kubernetes.io/managed-by": "agentcube-e2b"}
SECRET_VALUE = "s3cret-env-value-1f2e"  # an env value that must appear in no spec


def rfc(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def writes_for(cluster: Cluster, name: str) -> list[Logged]:
    """The test's POST, PATCH and DELETE requests about objects named `name`."""
    return [
        w for w in cluster.writes()
        if name in (w.name, ((w.body or {}).get("metadata") or {}).get("name"))
    ]  # fmt: skip


def decoded(secret: Obj, key: str) -> str:
    return base64.b64decode(secret["data"][key]).decode()


def no_secret_in_specs(cluster: Cluster, sandbox: Sandbox) -> None:
    """Neither the access token nor an env value is in any Sandbox, claim or Pod, stored or
    as the lifecycle sent it."""
    token = sandbox.envd_access_token
    sent = [w.body for w in cluster.writes() if w.plural != "secrets" and w.body]
    stored = [
        obj for plural in ("sandboxes", "sandboxclaims", "pods")
        for obj in cluster.api.objects[plural].values()
    ]  # fmt: skip
    for obj in sent + stored:
        text = serialized(obj)
        assert token not in text
        assert SECRET_VALUE not in text


async def assert_bound(sandbox: Sandbox) -> None:
    """picod serves `sandbox` with the gateway's JWT for it and its token, and nothing less."""
    envs = await picod_envs(sandbox)
    assert envs["GREETING"] == SECRET_VALUE
    sid, token = sandbox.sandbox_id, sandbox.envd_access_token
    another = "zz" + sid[2:]
    refused = [
        await picod_get(sandbox, "/envs", jwt_for=another, token=token),  # JWT of another id
        await picod_get(sandbox, "/envs", token=token),  # no JWT
        await picod_get(sandbox, "/envs", jwt_for=sid, token=token[::-1]),  # wrong token
    ]
    assert [r.status_code for r in refused] == [401, 401, 401]


async def test_cold_create_writes_a_secret_then_a_sandbox_owning_it(
    cluster: Cluster, backend: KubernetesBackend
) -> None:
    api = cluster.api
    before = time.time()
    sandbox = await backend.create(
        cluster.spec(env_vars={"GREETING": SECRET_VALUE}, metadata={"user": "ann"})
    )
    sid, name = sandbox.sandbox_id, name_of(sandbox.sandbox_id)
    token = access_token(backend.seed, sid)
    assert sandbox.envd_access_token == token
    assert (sandbox.state, sandbox.template_id) == (State.RUNNING, COLD)
    assert sandbox.tenant == cluster.tenant
    assert sandbox.env_vars == {"GREETING": SECRET_VALUE} and sandbox.metadata == {"user": "ann"}
    assert sandbox.end_at - sandbox.started_at == 300
    assert before - 1 <= sandbox.started_at <= time.time()

    writes = writes_for(cluster, name)
    assert [(w.method, w.plural) for w in writes] == [
        ("POST", "secrets"), ("POST", "sandboxes"), ("PATCH", "secrets")]  # fmt: skip
    assert writes[1].api_version == cluster.release.sandbox_api_version  # found by discovery
    assert writes[2].body == {"metadata": {"ownerReferences": [{
        "apiVersion": cluster.release.sandbox_api_version, "kind": "Sandbox", "name": name,
        "uid": api.objects["sandboxes"][(cluster.tenant, name)]["metadata"]["uid"]}]}}  # fmt: skip

    secret = cluster.stored("secrets", name)
    assert secret is not None
    assert decoded(secret, "access-token") == token
    assert json.loads(decoded(secret, "env-vars.json")) == {"GREETING": SECRET_VALUE}
    assert secret["metadata"]["labels"] == {ID_LABEL: sid, TEMPLATE_LABEL: COLD, **MANAGED}

    cr = cluster.stored("sandboxes", name)
    assert cr is not None
    assert cr["metadata"]["labels"] == {ID_LABEL: sid, TEMPLATE_LABEL: COLD, **MANAGED}
    notes = cr["metadata"]["annotations"]
    assert object_proof.has_valid_proof(backend.proof_key, cr)
    assert notes["e2b.agentcube.io/end-at"] == rfc(sandbox.end_at)
    assert notes["e2b.agentcube.io/metadata"] == '{"user":"ann"}'
    assert notes["e2b.agentcube.io/max-duration-s"] == "3600"
    assert "e2b.agentcube.io/state" not in notes
    assert cr["spec"]["shutdownTime"] == rfc(sandbox.end_at)
    assert cr["spec"]["shutdownPolicy"] == "Delete"
    for field, value in cluster.release.running_spec().items():
        assert cr["spec"][field] == value

    pod = cluster.stored("pods", name)
    assert pod is not None and pod["status"]["podIP"] == sandbox.endpoint_host
    assert {ID_LABEL: sid, TEMPLATE_LABEL: COLD}.items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["PICOD_AUTH_PUBLIC_KEY"]["value"] == identity().public_pem.decode()
    assert env["AGENTCUBE_E2B_PICOD_SANDBOX_ID"]["value"] == sid
    for variable, key in (("AGENTCUBE_E2B_PICOD_ACCESS_TOKEN", "access-token"),
                          ("AGENTCUBE_E2B_PICOD_ENV_JSON", "env-vars.json")):  # fmt: skip
        assert env[variable] == {
            "name": variable,
            "valueFrom": {"secretKeyRef": {"name": name, "key": key}},
        }
    no_secret_in_specs(cluster, sandbox)
    await assert_bound(sandbox)
    assert await backend.get(sid, cluster.tenant) == sandbox
    # another tenant's sandbox is indistinguishable from a missing one
    other = cluster.other
    for call in (backend.get(sid, other), backend.kill(sid, other), backend.metrics(sid, other),
                 backend.set_timeout(sid, other, 10), backend.pause(sid, other)):  # fmt: skip
        with pytest.raises(NotFound):
            await call

    (metric,) = await backend.metrics(sid, cluster.tenant)  # picod's /metrics wants the JWT
    assert metric.cpu_count >= 1 and metric.mem_total > 0

    await backend.kill(sid, cluster.tenant)
    assert [(w.method, w.plural) for w in writes_for(cluster, name)][3:] == [
        ("DELETE", "sandboxes")
    ]
    # the garbage collector takes the pod and the Secret with their owner
    await cluster.until(lambda: not cluster.stored("pods", name))
    assert cluster.stored("secrets", name) is None
    with pytest.raises(NotFound):
        await backend.get(sid, cluster.tenant)
    with pytest.raises(NotFound):
        await backend.kill(sid, cluster.tenant)


def claim_source(cluster: Cluster) -> Obj:
    if cluster.release.claims_name_a_pool:
        return {"warmPoolRef": {"name": POOLED}}
    return {"sandboxTemplateRef": {"name": POOLED}}


async def test_warm_create_adopts_the_ready_pool_sandbox_and_binds_its_picod(
    cluster: Cluster, backend: KubernetesBackend, warm_pool: str
) -> None:
    sandbox = await backend.create(cluster.spec(POOLED, env_vars={"GREETING": SECRET_VALUE}))
    sid, name = sandbox.sandbox_id, name_of(sandbox.sandbox_id)

    writes = writes_for(cluster, name)
    assert [(w.method, w.plural) for w in writes] == [
        ("POST", "sandboxclaims"), ("POST", "secrets")]  # fmt: skip
    assert writes[0].api_version == cluster.release.extensions_api_version
    adopt = [(w.method, w.name) for w in cluster.writes("sandboxes")]
    assert adopt == [("PATCH", warm_pool)]

    claim = cluster.stored("sandboxclaims", name)
    assert claim is not None
    labels = {ID_LABEL: sid, TEMPLATE_LABEL: POOLED}
    assert claim["spec"] == {
        **claim_source(cluster),
        "additionalPodMetadata": {"labels": labels},
        "lifecycle": {"shutdownTime": rfc(sandbox.end_at), "shutdownPolicy": "Delete"},
    }
    assert claim["metadata"]["ownerReferences"][0]["uid"] == f"uid-{cluster.tenant}-{POOLED}"
    assert claim["status"]["sandbox"]["name"] == warm_pool  # the ready one was adopted

    cr = cluster.stored("sandboxes", warm_pool)
    assert cr is not None
    assert labels.items() <= cr["metadata"]["labels"].items()
    assert MANAGED.items() <= cr["metadata"]["labels"].items()
    notes = cr["metadata"]["annotations"]
    assert notes["e2b.agentcube.io/claim"] == name
    assert notes["e2b.agentcube.io/end-at"] == rfc(sandbox.end_at)
    assert object_proof.has_valid_proof(backend.proof_key, cr)
    assert "shutdownTime" not in cr["spec"]  # the claim's lifecycle governs it
    owner = next(r for r in cr["metadata"]["ownerReferences"] if r.get("controller"))
    assert (owner["kind"], owner["name"]) == ("SandboxClaim", name)

    secret = cluster.stored("secrets", name)
    assert secret is not None
    assert [r["uid"] for r in secret["metadata"]["ownerReferences"]] == [claim["metadata"]["uid"]]
    assert decoded(secret, "access-token") == sandbox.envd_access_token

    pod = cluster.stored("pods", notes.get("agents.x-k8s.io/pod-name", warm_pool))
    assert pod is not None and pod["status"]["podIP"] == sandbox.endpoint_host
    assert labels.items() <= pod["metadata"]["labels"].items()
    no_secret_in_specs(cluster, sandbox)
    await assert_bound(sandbox)  # POST /init happened: id, token and envVars
    (metric,) = await backend.metrics(sid, cluster.tenant)
    assert metric.mem_total > 0

    await backend.kill(sid, cluster.tenant)
    assert [(w.method, w.plural) for w in writes_for(cluster, name)][2:] == [
        ("DELETE", "sandboxclaims")]  # fmt: skip
    await cluster.until(lambda: not cluster.stored("sandboxes", warm_pool))
    await cluster.until(lambda: not cluster.stored("pods", warm_pool))
    assert cluster.stored("secrets", name) is None
    with pytest.raises(NotFound):
        await backend.get(sid, cluster.tenant)


async def test_warm_create_on_an_empty_pool_waits_for_the_sandbox_named_after_the_claim(
    lone_cluster: Cluster,
) -> None:
    """The claim names its new Sandbox before the Sandbox's pod exists: the Create waits for
    the pod (no 404, no rollback)."""
    cluster = lone_cluster
    api = cluster.api
    backend = await cluster.backends.start()
    await cluster.stop_warm_pools()
    cluster.put_interpreter(POOLED, warmPoolSize=1)
    await cluster.until(lambda: cluster.stored("sandboxwarmpools", POOLED))
    events: list[tuple[str, str, Obj]] = []
    api.listeners.append(lambda plural, kind, obj: events.append((plural, kind, obj)))

    sandbox = await backend.create(cluster.spec(POOLED, env_vars={"GREETING": SECRET_VALUE}))
    name = name_of(sandbox.sandbox_id)
    claim = cluster.stored("sandboxclaims", name)
    assert claim is not None and claim["status"]["sandbox"]["name"] == name

    def first(test: Any) -> int:
        return next(i for i, event in enumerate(events) if test(*event))

    named = first(lambda plural, _, obj: plural == "sandboxclaims" and (
        (obj.get("status") or {}).get("sandbox") or {}).get("name") == name)  # fmt: skip
    pod_made = first(lambda plural, kind, obj: plural == "pods" and kind == "ADDED"
                     and obj["metadata"]["name"] == name)  # fmt: skip
    assert named < pod_made
    assert [w.method for w in cluster.writes() if w.method == "DELETE"] == []  # no rollback
    refused = [w for r in cluster.backends.resources for w in r.writes if w.status is not None]
    assert refused == []  # no 404 on the way
    assert [(w.method, w.plural, w.name) for w in cluster.writes("sandboxes")] == [
        ("PATCH", "sandboxes", name)]  # fmt: skip
    cr = cluster.stored("sandboxes", name)
    assert cr is not None and object_proof.has_valid_proof(backend.proof_key, cr)
    no_secret_in_specs(cluster, sandbox)
    await assert_bound(sandbox)

    await backend.kill(sandbox.sandbox_id, cluster.tenant)
    await cluster.until(lambda: not cluster.stored("pods", name))
    assert cluster.names("sandboxes") == set() and cluster.names("sandboxclaims") == set()
    assert cluster.stored("secrets", name) is None


async def test_auth_mode_none_injects_no_key_and_refuses_a_warm_pool(
    lone_cluster: Cluster,
) -> None:
    cluster = lone_cluster
    backend = await cluster.backends.start()
    await cluster.stop_warm_pools()  # the pool's pods would trust no key and hold no token
    cluster.put_interpreter("open", authMode="none")
    cluster.put_interpreter("open-pool", authMode="none", warmPoolSize=1)
    sandbox = await backend.create(cluster.spec("open"))
    pod = cluster.stored("pods", name_of(sandbox.sandbox_id))
    assert pod is not None
    names = [e["name"] for e in pod["spec"]["containers"][0]["env"]]
    assert "PICOD_AUTH_PUBLIC_KEY" not in names and "AGENTCUBE_E2B_PICOD_ACCESS_TOKEN" in names
    # picod checks the access token alone
    token = sandbox.envd_access_token
    assert (await picod_get(sandbox, "/envs", token=token)).status_code == 200
    assert (await picod_get(sandbox, "/envs", token=token[::-1])).status_code == 401

    with pytest.raises(InvalidArgument, match="authMode none"):
        await backend.create(cluster.spec("open-pool"))
    assert cluster.writes("sandboxclaims") == []


async def test_unknown_template_and_tenant_write_nothing(
    cluster: Cluster, backend: KubernetesBackend
) -> None:
    with pytest.raises(NotFound, match="template 'nope' not found"):
        await backend.create(cluster.spec("nope"))
    with pytest.raises(NotFound):
        await backend.create(cluster.spec(tenant="nobody"))
    with pytest.raises(Unimplemented, match="allowPublicTraffic"):
        await backend.create(cluster.spec(allow_public_traffic=False))
    assert cluster.writes() == []


async def test_templates_are_the_tenants_code_interpreters(
    cluster: Cluster, backend: KubernetesBackend
) -> None:
    cluster.put_interpreter("jupyter", ports=[{"port": 49983}, {"port": 49999}, {"port": 8080}])
    templates = {t.template_id: t for t in await backend.list_templates(cluster.tenant)}
    assert set(templates) == {COLD, "jupyter"}
    jupyter = await backend.get_template("jupyter", cluster.tenant)
    assert (jupyter.ports, jupyter.interpreter) == ((49999, 8080), True)
    assert (jupyter.cpu_count, jupyter.memory_mb, jupyter.tenant) == (1, 1024, cluster.tenant)
    assert not (await backend.get_template(COLD, cluster.tenant)).interpreter
    with pytest.raises(NotFound):
        await backend.get_template("jupyter", cluster.other)
    with pytest.raises(Unimplemented, match="kubectl"):
        await backend.delete_template(cluster.tenant, COLD)
