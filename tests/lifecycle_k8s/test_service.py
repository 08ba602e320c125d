"""Start-up (API discovery, AgentCube's identity) and the gRPC surface of the lifecycle service
in Kubernetes mode: `serving` with a kubeconfig for the fake cluster, plaintext (no TLS
Secret), every status code a client can meet."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from kubernetes.client import ApiClient, Configuration, CustomObjectsApi

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2_grpc as pb_grpc
from extproc.core.errors import Unavailable
from extproc.k8s.discovery import kinds_for
from extproc.k8s.identity import SecretMissing, SecretUnavailable
from extproc.k8s.resources import Resources
from extproc.lifecycle.server import serving
from extproc.lifecycle.settings import LifecycleSettings, ServerSettings

from .conftest import (
    AGENTCUBE,
    COLD,
    IDENTITY_SECRET,
    SYSTEM,
    Cluster,
    identity,
    invalid_stored_objects,
    kube_settings,
    name_of,
    unstrict_writes,
)

pytestmark = pytest.mark.asyncio(loop_scope="package")


async def test_start_up_discovers_the_version_and_needs_agentcubes_identity(
    lone_cluster: Cluster,
) -> None:
    cluster, backends, api = lone_cluster, lone_cluster.backends, lone_cluster.api
    # the newest version both agent-sandbox groups serve; one that is not served is refused
    storage = cluster.release.storage_version
    if storage == "v1alpha1":
        unserved = backends.new(agent_sandbox_version="v1beta1")
        with pytest.raises(Unavailable, match="v1beta1 is not served"):
            await unserved.start()
        await unserved.close()

    api.delete("secrets", AGENTCUBE, IDENTITY_SECRET)
    missing = backends.new()
    with pytest.raises(SecretMissing) as error:
        await missing.start()
    await missing.close()
    message = str(error.value)
    assert f"{AGENTCUBE}/{IDENTITY_SECRET} not found" in message
    assert "--identity-namespace" in message and "--create-identity" in message
    assert [w for w in cluster.writes() if w.plural != "secrets"] == []

    # the Secret in another namespace (ours, say) is not AgentCube's: still refused
    api.put("secrets", identity().secret(SYSTEM))
    elsewhere = backends.new()
    with pytest.raises(SecretMissing):
        await elsewhere.start()
    await elsewhere.close()

    # a malformed one: refused with what is wrong
    broken = identity().secret()
    broken["data"]["public.pem"] = identity().secret()["data"]["private.pem"]
    api.put("secrets", broken)
    malformed = backends.new()
    with pytest.raises(SecretUnavailable, match=r"public\.pem is not a PEM public key"):
        await malformed.start()
    await malformed.close()
    api.delete("secrets", AGENTCUBE, IDENTITY_SECRET)

    # asked to, it makes one where AgentCube would look for it, and signs with it
    made = await backends.start(create_identity=True)
    assert made.kinds is not None and made.kinds.version == storage
    secret = api.objects["secrets"][(AGENTCUBE, IDENTITY_SECRET)]
    assert secret["metadata"]["labels"]["app"] == "agentcube"
    assert made.public_key_pem.encode() != identity().public_pem

    # a second replica reads what the first made: the same token seed and proof key
    replica = await backends.start()
    assert (replica.seed, replica.proof_key) == (made.seed, made.proof_key)
    assert replica.public_key_pem == made.public_key_pem
    made_secrets = [w.body["metadata"]["name"] for w in cluster.writes("secrets")
                    if w.method == "POST" and w.namespace == SYSTEM]  # fmt: skip
    assert made_secrets.count("e2b-envd-token-seed") == 1
    for name in ("e2b-envd-token-seed", "e2b-object-proof-key"):
        secret = api.objects["secrets"][(SYSTEM, name)]
        assert secret["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "agentcube-e2b"}


def kubeconfig(path: Path, url: str) -> Path:
    doc = {
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": url}}],
        "users": [{"name": "fake", "user": {"token": "t"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
    }  # fmt: skip
    path.write_text(json.dumps(doc))
    return path


@contextlib.asynccontextmanager
async def served(cluster: Cluster, tmp_path: Path) -> AsyncIterator[grpc.aio.Channel]:
    """The Kubernetes-mode lifecycle service on a loopback port, and a channel to it."""
    kube = kube_settings(kubeconfig=kubeconfig(tmp_path / "kubeconfig", cluster.api.url),
                         lifecycle_tls_secret="")  # fmt: skip
    config = LifecycleSettings(
        backend="kubernetes", server=ServerSettings(listen="127.0.0.1:0", grace_s=0.5),
        kubernetes=kube,
    )  # fmt: skip
    async with (
        serving(config) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        yield channel


async def expect(call: object, code: grpc.StatusCode) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call  # type: ignore[misc]
    assert error.value.code() is code, error.value.details()
    return str(error.value.details())


async def test_grpc_statuses(cluster: Cluster, tmp_path: Path) -> None:
    api, tenant = cluster.api, cluster.tenant
    async with served(cluster, tmp_path) as channel:
        stub = pb_grpc.SandboxServiceStub(channel)
        templates = pb_grpc.TemplateServiceStub(channel)
        created = await stub.CreateSandbox(pb.CreateSandboxRequest(
            tenant=tenant, template_id=COLD, timeout_seconds=60, env_vars={"A": "b"}))  # fmt: skip
        sid = created.sandbox.sandbox_id
        assert created.sandbox.endpoint_host.startswith("127.102.")
        assert created.sandbox.state == pb.SANDBOX_STATE_RUNNING
        got = await stub.GetSandbox(pb.GetSandboxRequest(tenant=tenant, sandbox_id=sid))
        assert got.sandbox.envd_access_token == created.sandbox.envd_access_token
        metrics = await stub.GetSandboxMetrics(
            pb.GetSandboxMetricsRequest(tenant=tenant, sandbox_id=sid))  # fmt: skip
        assert len(metrics.metrics) == 1 and metrics.metrics[0].mem_total > 0

        not_found = grpc.StatusCode.NOT_FOUND
        await expect(stub.GetSandbox(pb.GetSandboxRequest(tenant=cluster.other, sandbox_id=sid)),
                     not_found)  # fmt: skip
        await expect(stub.CreateSandbox(pb.CreateSandboxRequest(tenant=tenant,
                     template_id="nope")), not_found)  # fmt: skip
        await expect(stub.CreateSandbox(pb.CreateSandboxRequest(
            tenant=tenant, template_id=COLD, timeout_seconds=7200)),
            grpc.StatusCode.INVALID_ARGUMENT)  # fmt: skip
        await expect(stub.CreateSandbox(pb.CreateSandboxRequest(
            tenant=tenant, template_id=COLD, secure=True, allow_public_traffic=False)),
            grpc.StatusCode.UNIMPLEMENTED)  # fmt: skip
        await expect(templates.DeleteTemplate(pb.DeleteTemplateRequest(
            tenant=tenant, template_id=COLD)), grpc.StatusCode.UNIMPLEMENTED)  # fmt: skip

        # The tenant rules are the servicer's, whichever backend: a call for one tenant
        # refuses an empty one even with the all-tenants scope.
        every_tenant = (("x-agentcube-e2b-scope", "all-tenants"),)
        for call in (
            stub.CreateSandbox(pb.CreateSandboxRequest(template_id=COLD), metadata=every_tenant),
            stub.RefreshSandbox(pb.RefreshSandboxRequest(sandbox_id=sid), metadata=every_tenant),
            templates.DeleteTemplate(
                pb.DeleteTemplateRequest(template_id=COLD), metadata=every_tenant
            ),
        ):
            assert "tenant is required" in await expect(call, grpc.StatusCode.INVALID_ARGUMENT)

        await expect(stub.ResumeSandbox(pb.ResumeSandboxRequest(tenant=tenant, sandbox_id=sid)),
                     grpc.StatusCode.FAILED_PRECONDITION)  # fmt: skip
        paused = await stub.PauseSandbox(pb.PauseSandboxRequest(tenant=tenant, sandbox_id=sid))
        assert paused.sandbox.state == pb.SANDBOX_STATE_PAUSED
        await expect(stub.PauseSandbox(pb.PauseSandboxRequest(tenant=tenant, sandbox_id=sid)),
                     grpc.StatusCode.FAILED_PRECONDITION)  # fmt: skip
        await expect(stub.SetSandboxTimeout(pb.SetSandboxTimeoutRequest(
            tenant=tenant, sandbox_id=sid, timeout_seconds=30)),
            grpc.StatusCode.FAILED_PRECONDITION)  # fmt: skip
        await stub.KillSandbox(pb.KillSandboxRequest(tenant=tenant, sandbox_id=sid))
        await expect(stub.KillSandbox(pb.KillSandboxRequest(tenant=tenant, sandbox_id=sid)),
                     not_found)  # fmt: skip
        assert (tenant, name_of(sid)) not in api.objects["sandboxes"]


async def test_the_checks_every_test_ends_with_can_fail(cluster: Cluster) -> None:
    """What the fixtures assert after each test: a write without Strict, a field the CRD
    does not have, an invalid stored object are each caught."""
    api = cluster.api
    client = ApiClient(Configuration(host=api.url))
    try:
        custom = CustomObjectsApi(client)
        sandbox_api = (cluster.release.sandbox_api_version.split("/")[0],
                       cluster.release.storage_version)  # fmt: skip
        container = {"name": "c", "image": "i"}
        body = {
            "apiVersion": cluster.release.sandbox_api_version, "kind": "Sandbox",
            "metadata": {"name": "loose"},
            "spec": {**cluster.release.running_spec(False),  # no pod
                     "podTemplate": {"metadata": {}, "spec": {"containers": [container]}},
                     "lifecycle": {"shutdownTime": "2030-01-01T00:00:00Z"}},
        }  # fmt: skip
        await asyncio.to_thread(
            custom.create_namespaced_custom_object, *sandbox_api, cluster.tenant, "sandboxes", body
        )
        assert [line.split(":")[0] for line in unstrict_writes(cluster.log())] == [
            "POST sandboxes "]  # fmt: skip
        del api.log[cluster.log_start :]  # this test's own loose write
        # dropped silently without Strict, refused with it (the backend's path)
        stored = cluster.stored("sandboxes", "loose")
        assert stored is not None and "lifecycle" not in stored["spec"]
        resources = Resources(client)
        kinds = kinds_for(cluster.release.storage_version)
        with pytest.raises(Unavailable, match="HTTP 400"):
            await resources.patch(
                kinds.sandbox, cluster.tenant, "loose", {"spec": {"lifecycle": {}}}
            )
        resources.close()
        api.delete("sandboxes", cluster.tenant, "loose")
    finally:
        client.close()  # type: ignore[no-untyped-call]
    api.put("sandboxes", {"metadata": {"name": "bad", "namespace": cluster.tenant},
                          "spec": {"replicas": "one", "lifecycle": {}}})  # fmt: skip
    problems = invalid_stored_objects(api)
    assert any("unknown .spec.lifecycle" in p or "spec.lifecycle" in p for p in problems)
    assert any("spec.podTemplate" in p for p in problems)  # required, absent
    api.delete("sandboxes", cluster.tenant, "bad")
    assert invalid_stored_objects(api) == []


async def test_idempotency_key(cluster: Cluster, tmp_path: Path) -> None:
    """As in local mode (the servicer keeps the keys, over either backend): a retry with the
    same key gets the sandbox the first request made, whatever its body; the key is per
    tenant; concurrent retries make one sandbox."""
    tenant = cluster.tenant
    async with served(cluster, tmp_path) as channel:
        stub = pb_grpc.SandboxServiceStub(channel)
        request = pb.CreateSandboxRequest(
            tenant=tenant, template_id=COLD, timeout_seconds=60, idempotency_key="retry-1"
        )
        first, second = await asyncio.gather(
            stub.CreateSandbox(request), stub.CreateSandbox(request))  # fmt: skip
        sid = first.sandbox.sandbox_id
        assert second.sandbox.sandbox_id == sid
        assert second.sandbox.envd_access_token == first.sandbox.envd_access_token
        other_body = pb.CreateSandboxRequest(
            tenant=tenant, template_id=COLD, timeout_seconds=120, metadata={"k": "v"},
            idempotency_key="retry-1",
        )  # fmt: skip
        retried = await stub.CreateSandbox(other_body)
        assert retried.sandbox.sandbox_id == sid and not retried.sandbox.metadata
        made = [w for w in cluster.writes("secrets")
                if w.method == "POST" and w.namespace == tenant]  # fmt: skip
        assert len(made) == 1  # one sandbox (one token Secret), whatever the retries
        elsewhere = await stub.CreateSandbox(pb.CreateSandboxRequest(
            tenant=cluster.other, template_id=COLD, timeout_seconds=60,
            idempotency_key="retry-1"))  # fmt: skip
        assert elsewhere.sandbox.sandbox_id != sid
        for made_in, made_id in ((tenant, sid), (cluster.other, elsewhere.sandbox.sandbox_id)):
            await stub.KillSandbox(pb.KillSandboxRequest(tenant=made_in, sandbox_id=made_id))
