"""Create, Get, Kill, rollback, tenancy and templates of the kubernetes backend, through the
official client against the fake API; every write is asserted from the API's request log."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import time
from typing import Any

import pytest

from extproc.core.errors import DeadlineExceeded, InvalidArgument, NotFound, Unimplemented
from extproc.core.tokens import access_token
from extproc.lifecycle.kubernetes import KubernetesBackend
from extproc.lifecycle.sandboxes import CreateSpec, State
from support.kubeapi import FakeApi

from .conftest import OTHER, SYSTEM, TENANT, Kubelet, Picod

TEMPLATE = "code-interpreter-v1"


def spec(**overrides: Any) -> CreateSpec:
    values: dict[str, Any] = {"tenant": TENANT, "template": TEMPLATE, "timeout_s": 300,
                              "metadata": {"user": "ann"}, "env_vars": {"FOO": "bar"}}  # fmt: skip
    values.update(overrides)
    return CreateSpec(**values)


def secret_data(api: FakeApi, name: str, key: str) -> bytes:
    secret = api.get("secrets", SYSTEM, name)
    assert secret is not None, name
    return base64.b64decode(secret["data"][key])


async def test_create_makes_exactly_the_sandbox_described(
    api: FakeApi, backend: KubernetesBackend, picod: Picod
) -> None:
    before = time.time()
    sandbox = await backend.create(spec())
    public_pem = secret_data(api, "picod-router-identity", "public.pem").decode()
    assert "BEGIN PUBLIC KEY" in public_pem
    assert b"BEGIN RSA PRIVATE KEY" in secret_data(api, "picod-router-identity", "private.pem")
    seed = bytes.fromhex(secret_data(api, "e2b-envd-token-seed", "seed").decode())
    sid = sandbox.sandbox_id
    token = access_token(seed, sid)
    assert sandbox.envd_access_token == token
    assert sandbox.state is State.RUNNING
    assert sandbox.endpoint_host == "127.0.0.1"
    assert sandbox.tenant == TENANT and sandbox.template_id == TEMPLATE
    assert sandbox.env_vars == {"FOO": "bar"} and sandbox.metadata == {"user": "ann"}
    assert sandbox.end_at - sandbox.started_at == 300
    assert before - 1 <= sandbox.started_at <= time.time()

    posts = [w for w in api.writes("sandboxes")]
    assert [(w.method, w.namespace) for w in posts] == [("POST", TENANT)]
    body = posts[0].body
    labels = {"e2b.agentcube.io/sandbox-id": sid, "e2b.agentcube.io/template": TEMPLATE,
              "app.kubernetes.io/managed-by": "agentcube-e2b"}  # fmt: skip
    end = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(sandbox.end_at))
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(sandbox.started_at))
    assert body["apiVersion"] == "agents.x-k8s.io/v1alpha1" and body["kind"] == "Sandbox"
    assert body["metadata"] == {
        "name": f"e2b-{sid}", "namespace": TENANT, "labels": labels,
        "annotations": {
            "e2b.agentcube.io/started-at": started, "e2b.agentcube.io/end-at": end,
            "e2b.agentcube.io/metadata": '{"user":"ann"}', "e2b.agentcube.io/alias": "",
            "e2b.agentcube.io/on-timeout": "kill",
            "e2b.agentcube.io/access-token-sha256": hashlib.sha256(token.encode()).hexdigest(),
        },
    }  # fmt: skip
    assert body["spec"]["replicas"] == 1
    assert body["spec"]["lifecycle"] == {"shutdownTime": end}
    pod = body["spec"]["podTemplate"]
    assert pod["metadata"]["labels"] == labels
    (container,) = pod["spec"]["containers"]
    assert container["image"] == "agentcube-e2b-sandbox:0.1.0"
    assert container["resources"] == {"limits": {"cpu": "2", "memory": "2Gi"}}
    assert container["ports"] == [
        {"name": "envd", "containerPort": 49983, "protocol": "TCP"},
        {"name": "jupyter", "containerPort": 49999, "protocol": "TCP"},
    ]
    assert container["env"] == [
        {"name": "TZ", "value": "UTC"},
        {"name": "PICOD_AUTH_PUBLIC_KEY", "value": public_pem},
        {"name": "AGENTCUBE_E2B_PICOD_SANDBOX_ID", "value": sid},
        {"name": "AGENTCUBE_E2B_PICOD_ACCESS_TOKEN", "value": token},
        {"name": "AGENTCUBE_E2B_PICOD_ENV", "value": "FOO=bar\n"},
    ]
    assert picod.requests[-1] != ("/health", {}) and picod.requests[-1][0] == "/health"
    assert await backend.get(sid, TENANT) == sandbox


async def test_secrets_are_created_once_and_reused(
    api: FakeApi, make_backend: Any
) -> None:
    first = await make_backend()
    second = await make_backend()
    assert first.seed == second.seed and first.public_key_pem == second.public_key_pem
    secret_posts = [w for w in api.writes("secrets")]
    assert [w.body["metadata"]["name"] for w in secret_posts] == [
        "e2b-envd-token-seed", "picod-router-identity",  # the first backend created them
        "e2b-envd-token-seed", "picod-router-identity",  # the second got 409 and read them
    ]  # fmt: skip
    identity = api.get("secrets", SYSTEM, "picod-router-identity")
    assert identity is not None
    assert identity["metadata"]["labels"] == {"app": "agentcube", "component": "router"}


async def test_kill_deletes_the_sandbox(api: FakeApi, backend: KubernetesBackend) -> None:
    sandbox = await backend.create(spec())
    await backend.kill(sandbox.sandbox_id, TENANT)
    deletes = [(w.method, w.namespace, w.name) for w in api.writes("sandboxes")][1:]
    assert deletes == [("DELETE", TENANT, f"e2b-{sandbox.sandbox_id}")]
    with pytest.raises(NotFound):
        await backend.get(sandbox.sandbox_id, TENANT)
    with pytest.raises(NotFound):
        await backend.kill(sandbox.sandbox_id, TENANT)


async def test_another_tenant_gets_not_found(backend: KubernetesBackend) -> None:
    sandbox = await backend.create(spec())
    for call in (backend.get(sandbox.sandbox_id, OTHER), backend.kill(sandbox.sandbox_id, OTHER),
                 backend.set_timeout(sandbox.sandbox_id, OTHER, 10)):  # fmt: skip
        with pytest.raises(NotFound):
            await call
    assert (await backend.get(sandbox.sandbox_id, TENANT)).sandbox_id == sandbox.sandbox_id


async def test_unknown_template_is_not_found(api: FakeApi, backend: KubernetesBackend) -> None:
    with pytest.raises(NotFound, match="template 'nope' not found"):
        await backend.create(spec(template="nope"))
    with pytest.raises(NotFound):
        await backend.create(spec(tenant="team-c"))
    assert api.writes("sandboxes") == []


async def test_rollback_when_the_pod_never_becomes_ready(
    api: FakeApi, kubelet: Kubelet, make_backend: Any
) -> None:
    kubelet.ready = False
    backend = await make_backend(ready_timeout_s=0.5)
    with pytest.raises(DeadlineExceeded, match=r"not ready within 0.5 s .* it was deleted"):
        await backend.create(spec())
    post, delete = api.writes("sandboxes")
    assert (post.method, delete.method) == ("POST", "DELETE")
    assert post.body["metadata"]["name"] == delete.name == kubelet.seen[0]
    assert api.objects["sandboxes"] == {}
    assert backend.hub.revision == 0  # nothing was announced


async def test_rollback_when_picod_never_answers(api: FakeApi, make_backend: Any) -> None:
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    backend = await make_backend(ready_timeout_s=0.5, picod_port=port)
    with pytest.raises(DeadlineExceeded):
        await backend.create(spec())
    assert [w.method for w in api.writes("sandboxes")] == ["POST", "DELETE"]
    assert api.objects["sandboxes"] == {}


async def test_api_failure_on_create_leaves_nothing(
    api: FakeApi, backend: KubernetesBackend
) -> None:
    api.fail("POST", "sandboxes", 500)
    with pytest.raises(Exception, match="HTTP 500"):
        await backend.create(spec())
    assert api.objects["sandboxes"] == {}


async def test_warm_pool_template_makes_a_claim(
    api: FakeApi, backend: KubernetesBackend
) -> None:
    sandbox = await backend.create(spec(template="pooled", env_vars={}))
    sid = sandbox.sandbox_id
    (claim_post,) = api.writes("sandboxclaims")
    assert claim_post.method == "POST"
    claim = claim_post.body
    assert claim["kind"] == "SandboxClaim" and claim["metadata"]["name"] == f"e2b-{sid}"
    assert claim["spec"] == {"sandboxTemplateRef": {"name": "pooled"}}
    assert claim["metadata"]["ownerReferences"][0]["uid"] == "uid-pooled"
    assert claim["metadata"]["labels"]["e2b.agentcube.io/sandbox-id"] == sid
    (sandbox_patch,) = api.writes("sandboxes")
    assert (sandbox_patch.method, sandbox_patch.name) == ("PATCH", "pool-1")
    assert sandbox_patch.content_type == "application/merge-patch+json"
    assert sandbox_patch.body["metadata"]["labels"]["e2b.agentcube.io/sandbox-id"] == sid
    assert sandbox_patch.body["metadata"]["annotations"]["e2b.agentcube.io/claim"] == f"e2b-{sid}"
    (pod_patch,) = api.writes("pods")
    assert (pod_patch.method, pod_patch.name) == ("PATCH", "pool-1-pod")
    assert sandbox.endpoint_host == "127.0.0.1"
    await backend.kill(sid, TENANT)
    assert [(w.method, w.name) for w in api.writes("sandboxclaims")][1:] == [
        ("DELETE", f"e2b-{sid}")
    ]


async def test_warm_pool_refuses_env_vars(backend: KubernetesBackend) -> None:
    with pytest.raises(InvalidArgument, match="warm pool"):
        await backend.create(spec(template="pooled"))


async def test_templates_come_from_code_interpreters(backend: KubernetesBackend) -> None:
    templates = {t.template_id: t for t in await backend.list_templates(TENANT)}
    assert set(templates) == {TEMPLATE, "pooled"}
    template = await backend.get_template(TEMPLATE, TENANT)
    assert (template.ports, template.cpu_count, template.memory_mb) == ((49999,), 2, 2048)
    assert template.tenant == TENANT
    with pytest.raises(NotFound):
        await backend.get_template("pooled", OTHER)
    with pytest.raises(Unimplemented, match="kubectl"):
        await backend.delete_template(TENANT, TEMPLATE)


async def test_pause_is_unimplemented(backend: KubernetesBackend) -> None:
    sandbox = await backend.create(spec())
    with pytest.raises(Unimplemented, match="pausing is not available"):
        await backend.pause(sandbox.sandbox_id, TENANT)


async def test_metrics_come_from_picod(backend: KubernetesBackend, picod: Picod) -> None:
    sandbox = await backend.create(spec())
    (metric,) = await backend.metrics(sandbox.sandbox_id, TENANT)
    assert (metric.cpu_count, metric.mem_total) == (2, 20)
    path, headers = picod.requests[-1]
    assert path == "/metrics" and headers["x-access-token"] == sandbox.envd_access_token
    assert json.dumps(metric.cpu_used_pct) == "1.5"
