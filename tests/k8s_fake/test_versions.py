"""API versions: discovery lists what each release serves, and on v0.5.6 one object is seen
through v1alpha1 and v1beta1 as the conversion webhook shows it, in reads, lists, writes
and watches, stored once in v1beta1."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kubernetes.client import ApisApi

from k8s_fake.conftest import EXTENSIONS, NS, SANDBOX_GROUP, Cluster, claim, sandbox
from support.kube_conversion import convert

ALPHA = (SANDBOX_GROUP, "v1alpha1", "sandboxes")
BETA = (SANDBOX_GROUP, "v1beta1", "sandboxes")
CLAIMS_ALPHA = (EXTENSIONS, "v1alpha1", "sandboxclaims")
CLAIMS_BETA = (EXTENSIONS, "v1beta1", "sandboxclaims")
DEPRECATED = "agents.x-k8s.io/v1alpha1 Sandbox is deprecated; use agents.x-k8s.io/v1beta1 Sandbox"


async def test_discovery_of_v056_prefers_the_storage_version(v056: Cluster) -> None:
    groups: Any = await asyncio.to_thread(ApisApi(v056.client).get_api_versions)
    listed = {
        g.name: (g.preferred_version.version, [v.version for v in g.versions])
        for g in groups.groups
    }
    assert listed == {
        SANDBOX_GROUP: ("v1beta1", ["v1beta1", "v1alpha1"]),
        EXTENSIONS: ("v1beta1", ["v1beta1", "v1alpha1"]),
        "runtime.agentcube.volcano.sh": ("v1alpha1", ["v1alpha1"]),
    }
    group = await v056.raw("GET", "/apis/extensions.agents.x-k8s.io")
    assert group.body["preferredVersion"] == {
        "groupVersion": "extensions.agents.x-k8s.io/v1beta1",
        "version": "v1beta1",
    }
    resources = await v056.custom("get_api_resources", EXTENSIONS, "v1alpha1")
    assert resources.status == 200
    names = {r["name"]: (r["kind"], r["namespaced"]) for r in resources.body["resources"]}
    assert names == {
        "sandboxclaims": ("SandboxClaim", True),
        "sandboxclaims/status": ("SandboxClaim", True),
        "sandboxtemplates": ("SandboxTemplate", True),
        "sandboxtemplates/status": ("SandboxTemplate", True),
        "sandboxwarmpools": ("SandboxWarmPool", True),
        "sandboxwarmpools/status": ("SandboxWarmPool", True),
    }
    (sandboxes,) = [
        r
        for r in (await v056.raw("GET", "/apis/agents.x-k8s.io/v1beta1")).body["resources"]
        if r["name"] == "sandboxes"
    ]
    assert {"create", "get", "list", "patch", "delete", "watch"} <= set(sandboxes["verbs"])
    core = await v056.raw("GET", "/api/v1")
    assert {"pods", "pods/status", "secrets", "configmaps"} <= {
        r["name"] for r in core.body["resources"]
    }
    assert (await v056.raw("GET", "/api")).body["versions"] == ["v1"]


async def test_discovery_of_v046_has_no_v1beta1(v046: Cluster) -> None:
    groups = await asyncio.to_thread(ApisApi(v046.client).get_api_versions)
    versions = {g.name: [v.version for v in g.versions] for g in groups.groups}
    assert versions[SANDBOX_GROUP] == versions[EXTENSIONS] == ["v1alpha1"]
    assert (await v046.raw("GET", "/apis/agents.x-k8s.io/v1beta1")).status == 404
    assert (await v046.raw("GET", "/apis/nothing.example.com")).status == 404
    assert (await v046.get(*BETA, "box")).status == 404  # no such endpoint


async def test_v1alpha1_replicas_0_reads_as_v1beta1_suspended(v056: Cluster) -> None:
    created = await v056.create(*ALPHA, sandbox("box", replicas=0), field_validation="Strict")
    assert created.status == 201
    assert created.body["apiVersion"] == "agents.x-k8s.io/v1alpha1"
    assert created.body["spec"]["replicas"] == 0 and "operatingMode" not in created.body["spec"]
    assert created.warnings == [DEPRECATED]
    stored = v056.api.get("sandboxes", NS, "box")
    assert stored is not None
    assert stored["apiVersion"] == "agents.x-k8s.io/v1beta1"
    assert stored["spec"]["operatingMode"] == "Suspended" and "replicas" not in stored["spec"]
    beta = await v056.get(*BETA, "box")
    assert (beta.body["apiVersion"], beta.body["spec"]["operatingMode"]) == (
        "agents.x-k8s.io/v1beta1",
        "Suspended",
    )
    assert beta.warnings == []
    resumed = await v056.patch(*ALPHA, "box", {"spec": {"replicas": 1}}, field_validation="Strict")
    assert resumed.body["spec"]["replicas"] == 1
    assert (await v056.get(*BETA, "box")).body["spec"]["operatingMode"] == "Running"
    # replicas is not a v1beta1 field, operatingMode not a v1alpha1 one.
    reply = await v056.patch(*BETA, "box", {"spec": {"replicas": 0}}, field_validation="Strict")
    assert reply.status == 400 and 'unknown field "spec.replicas"' in reply.body["message"]
    reply = await v056.patch(*BETA, "box", {"spec": {"operatingMode": "Paused"}})
    assert reply.causes == [("spec.operatingMode", "FieldValueNotSupported")]


async def test_v1beta1_defaults_running_and_v1alpha1_sees_one_replica(v056: Cluster) -> None:
    created = await v056.create(*BETA, sandbox("box", "v1beta1"), field_validation="Strict")
    assert created.body["spec"]["operatingMode"] == "Running"
    alpha = await v056.get(*ALPHA, "box")
    assert alpha.body["spec"]["replicas"] == 1 and "operatingMode" not in alpha.body["spec"]
    listed = await v056.custom("list_namespaced_custom_object", *ALPHA[:2], NS, "sandboxes")
    assert (listed.body["kind"], listed.body["apiVersion"]) == (
        "SandboxList",
        ALPHA[0] + "/v1alpha1",
    )
    assert [item["spec"]["replicas"] for item in listed.body["items"]] == [1]
    assert listed.warnings == [DEPRECATED]


async def test_a_v1alpha1_claim_waits_for_a_shadow_pool(v056: Cluster) -> None:
    body = claim("c", sandboxTemplateRef={"name": "python"})
    assert (await v056.create(*CLAIMS_ALPHA, body, field_validation="Strict")).status == 201
    beta = await v056.get(*CLAIMS_BETA, "c")
    assert beta.body["spec"] == {"warmPoolRef": {"name": "shadow-pool-python"}}
    stored = v056.api.get("sandboxclaims", NS, "c")
    assert stored is not None and stored["spec"] == {"warmPoolRef": {"name": "shadow-pool-python"}}
    alpha = await v056.get(*CLAIMS_ALPHA, "c")
    assert alpha.body["spec"] == {"sandboxTemplateRef": {"name": "python"}}


async def test_a_named_warm_pool_converts_verbatim(v056: Cluster) -> None:
    body = claim("c", sandboxTemplateRef={"name": "python"}, warmpool="python-pool")
    assert (await v056.create(*CLAIMS_ALPHA, body)).status == 201
    assert (await v056.get(*CLAIMS_BETA, "c")).body["spec"]["warmPoolRef"] == {
        "name": "python-pool"
    }
    direct = claim(
        "d",
        "v1beta1",
        warmPoolRef={"name": "python"},
        additionalPodMetadata={"labels": {"e2b.agentcube.io/sandbox-id": "abc"}},
    )
    assert (await v056.create(*CLAIMS_BETA, direct, field_validation="Strict")).status == 201
    missing = await v056.create(*CLAIMS_BETA, claim("e", "v1beta1"))
    assert missing.causes == [("spec.warmPoolRef", "FieldValueRequired")]
    old_style = await v056.create(
        *CLAIMS_BETA,
        claim("f", "v1beta1", sandboxTemplateRef={"name": "x"}, warmPoolRef={"name": "x"}),
        field_validation="Strict",
    )
    assert old_style.status == 400 and "spec.sandboxTemplateRef" in old_style.body["message"]


async def test_v046_claims_need_a_template_and_know_no_warmpool(v046: Cluster) -> None:
    missing = await v046.create(*CLAIMS_ALPHA, claim("c"))
    assert missing.causes == [("spec.sandboxTemplateRef", "FieldValueRequired")]
    body = claim(
        "c",
        sandboxTemplateRef={"name": "python"},
        warmpool="pool",
        lifecycle={"shutdownTime": "2026-01-01T00:00:00Z", "shutdownPolicy": "Delete"},
    )
    reply = await v046.create(*CLAIMS_ALPHA, body, field_validation="Strict")
    assert reply.status == 400 and 'unknown field "spec.warmpool"' in reply.body["message"]
    del body["spec"]["warmpool"]
    reply = await v046.create(*CLAIMS_ALPHA, body, field_validation="Strict")
    assert reply.status == 201 and reply.body["spec"]["lifecycle"]["shutdownPolicy"] == "Delete"


async def test_a_watch_in_a_non_storage_version_gets_converted_events(v056: Cluster) -> None:
    since = v056.api.rv
    assert (
        await v056.create(*BETA, sandbox("a", "v1beta1", operatingMode="Suspended"))
    ).status == 201
    live = sandbox("b", "v1beta1", operatingMode="Running")

    def put_live() -> None:
        v056.api.put("sandboxes", live)  # a controller's write, in the storage version

    events = await v056.watch(*ALPHA, since=since, count=2, live=put_live)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "a"),
        ("ADDED", "b"),
    ]
    assert {e["object"]["apiVersion"] for e in events} == {"agents.x-k8s.io/v1alpha1"}
    assert [e["object"]["spec"]["replicas"] for e in events] == [0, 1]
    assert all("operatingMode" not in e["object"]["spec"] for e in events)
    beta_events = await v056.watch(*BETA, since=since, count=2)
    assert [e["object"]["spec"]["operatingMode"] for e in beta_events] == ["Suspended", "Running"]


def test_conversion_refuses_what_it_cannot_convert() -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}
    assert convert(pod, "v1") == pod
    with pytest.raises(ValueError, match="no conversion of Pod"):
        convert(pod, "v2")
    box = sandbox("box", replicas=0)
    with pytest.raises(ValueError, match="no conversion"):
        convert(box, "other.example.com/v1beta1")
    assert convert(convert(box, "agents.x-k8s.io/v1beta1"), "agents.x-k8s.io/v1alpha1") == box
