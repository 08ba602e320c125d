"""What the server manages on objects: the status subresource, generation, uid and
creationTimestamp, quiet no-op patches, garbage collection through ownerReferences, and the
in-process writes (`put`, `put_status`, `delete`) the fake controllers use."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from k8s_fake.conftest import AGENTCUBE, NS, SANDBOX_GROUP, Cluster, sandbox
from support.kubeapi import FakeApi, Obj, served

SANDBOXES = (SANDBOX_GROUP, "v1alpha1", "sandboxes")
READY = {
    "conditions": [
        {
            "type": "Ready",
            "status": "True",
            "reason": "PodReady",
            "message": "",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }
    ],
    "podIPs": ["10.0.0.7"],
}


class Recorder:
    def __init__(self, api: FakeApi) -> None:
        self.events: list[tuple[str, str, str]] = []
        api.listeners.append(self)

    def __call__(self, plural: str, kind: str, obj: Obj) -> None:
        self.events.append((kind, plural, obj["metadata"]["name"]))


def owned_by(owner: Obj, obj: Obj) -> Obj:
    reference = {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
    }
    obj["metadata"].setdefault("ownerReferences", []).append(reference)
    return obj


def secret(name: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NS},
        "data": {},
    }


def pod(name: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"containers": [{"name": "main", "image": "i"}]},
    }


async def test_the_main_resource_cannot_write_status(v046: Cluster) -> None:
    created = await v046.create(*SANDBOXES, dict(sandbox("box"), status=READY))
    assert "status" not in created.body
    v046.api.put_status("sandboxes", NS, "box", READY)
    patched = await v046.patch(
        *SANDBOXES, "box", {"spec": {"replicas": 0}, "status": {"podIPs": []}}
    )
    assert patched.status == 200
    assert patched.body["status"] == READY and patched.body["spec"]["replicas"] == 0


async def test_the_status_subresource_writes_only_status(v046: Cluster) -> None:
    await v046.create(*SANDBOXES, sandbox("box"))
    reply = await v046.patch(
        *SANDBOXES,
        "box",
        {"spec": {"replicas": 0}, "status": READY},
        status=True,
        field_validation="Strict",
    )
    assert reply.status == 200
    assert reply.body["status"] == READY and "replicas" not in reply.body["spec"]
    assert v046.api.log[-1].subresource == "status"
    bad = await v046.patch(
        *SANDBOXES, "box", {"status": {"conditions": [{"type": "Ready"}]}}, status=True
    )
    assert bad.status == 422
    assert ("status.conditions[0].status", "FieldValueRequired") in bad.causes
    fetched = await v046.custom(
        "get_namespaced_custom_object_status", *SANDBOXES[:2], NS, "sandboxes", "box"
    )
    assert fetched.body["status"] == READY
    assert (
        await v046.raw("GET", f"/apis/agents.x-k8s.io/v1alpha1/namespaces/{NS}/sandboxes/box/scale")
    ).status == 404


async def test_generation_moves_with_the_spec_only(v046: Cluster) -> None:
    created = await v046.create(*SANDBOXES, sandbox("box"))
    assert created.body["metadata"]["generation"] == 1
    relabelled = await v046.patch(*SANDBOXES, "box", {"metadata": {"labels": {"a": "b"}}})
    assert relabelled.body["metadata"]["generation"] == 1
    await v046.patch(*SANDBOXES, "box", {"status": READY}, status=True)
    scaled = await v046.patch(*SANDBOXES, "box", {"spec": {"replicas": 0}})
    assert scaled.body["metadata"]["generation"] == 2
    forged = await v046.patch(*SANDBOXES, "box", {"metadata": {"generation": 9, "uid": "mine"}})
    assert forged.body["metadata"]["generation"] == 2
    assert forged.body["metadata"]["uid"] == created.body["metadata"]["uid"]


async def test_uids_are_unique_and_creation_timestamps_real(v046: Cluster) -> None:
    first = (await v046.create(*SANDBOXES, sandbox("a"))).body["metadata"]
    second = (await v046.create(*SANDBOXES, sandbox("b"))).body["metadata"]
    assert first["uid"] != second["uid"]
    created = datetime.strptime(first["creationTimestamp"], "%Y-%m-%dT%H:%M:%SZ")
    assert abs(created.replace(tzinfo=UTC) - datetime.now(UTC)) < timedelta(hours=1)
    given = dict(sandbox("c"))
    given["metadata"] = dict(
        given["metadata"], uid="forged", creationTimestamp="2000-01-01T00:00:00Z"
    )
    third = (await v046.create(*SANDBOXES, given)).body["metadata"]
    assert third["uid"] != "forged" and not third["creationTimestamp"].startswith("2000")


async def test_a_patch_that_changes_nothing_writes_nothing(v046: Cluster) -> None:
    created = await v046.create(*SANDBOXES, sandbox("box"))
    events = Recorder(v046.api)
    same = await v046.patch(*SANDBOXES, "box", {"spec": {"shutdownPolicy": "Retain"}})
    assert same.body["metadata"]["resourceVersion"] == created.body["metadata"]["resourceVersion"]
    assert events.events == []
    await v046.patch(*SANDBOXES, "box", {"spec": {"service": True}})
    assert events.events == [("MODIFIED", "sandboxes", "box")]


async def test_deleting_an_owner_collects_its_dependents_recursively(v046: Cluster) -> None:
    owner = (await v046.create(*SANDBOXES, sandbox("box"))).body
    token = (
        await v046.core("create_namespaced_secret", NS, owned_by(owner, secret("box-token")))
    ).body
    assert token["metadata"]["ownerReferences"][0]["uid"] == owner["metadata"]["uid"]
    v046.api.put("pods", owned_by(owner, pod("box")))
    v046.api.put(
        "configmaps",
        owned_by(
            v046.api.objects["pods"][(NS, "box")],
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "of-the-pod", "namespace": NS},
            },
        ),
    )
    other = (await v046.create(*SANDBOXES, sandbox("other"))).body
    shared = owned_by(other, owned_by(owner, secret("shared")))
    v046.api.put("secrets", shared)
    events = Recorder(v046.api)
    assert (await v046.delete(*SANDBOXES, "box")).status == 200
    assert events.events == [
        ("DELETED", "sandboxes", "box"),
        ("DELETED", "secrets", "box-token"),
        ("DELETED", "pods", "box"),
        ("DELETED", "configmaps", "of-the-pod"),
    ]
    assert (NS, "shared") in v046.api.objects["secrets"]  # another owner is alive
    v046.api.delete("sandboxes", NS, "other")  # in-process deletes collect too
    assert (NS, "shared") not in v046.api.objects["secrets"]


async def test_orphan_propagation_keeps_dependents(v046: Cluster) -> None:
    owner = (await v046.create(*SANDBOXES, sandbox("box"))).body
    v046.api.put("secrets", owned_by(owner, secret("box-token")))
    reply = await v046.delete(*SANDBOXES, "box", propagation_policy="Orphan")
    assert reply.status == 200
    assert (NS, "box-token") in v046.api.objects["secrets"]


async def test_put_is_a_controller_write(v046: Cluster) -> None:
    api = v046.api
    api.put(
        "sandboxes",
        {"metadata": {"name": "box", "namespace": NS}, "spec": {"podTemplate": {}, "junk": True}},
    )
    stored = api.objects["sandboxes"][(NS, "box")]
    assert stored["apiVersion"] == "agents.x-k8s.io/v1alpha1" and stored["kind"] == "Sandbox"
    assert stored["metadata"]["generation"] == 1 and stored["metadata"]["uid"]
    assert stored["spec"]["junk"] is True  # no schema on the way in...
    read = await v046.get(*SANDBOXES, "box")
    assert "junk" not in read.body["spec"]  # ...but reads are pruned and defaulted
    assert read.body["spec"]["shutdownPolicy"] == "Retain"
    uid = stored["metadata"]["uid"]
    api.put_status("sandboxes", NS, "box", READY)
    after = api.objects["sandboxes"][(NS, "box")]
    assert (after["status"], after["metadata"]["generation"], after["metadata"]["uid"]) == (
        READY,
        1,
        uid,
    )
    api.put("sandboxes", dict(after, spec={"podTemplate": {}, "replicas": 0}))
    assert api.objects["sandboxes"][(NS, "box")]["metadata"]["generation"] == 2


async def test_the_log_keeps_the_query_and_the_version(v046: Cluster) -> None:
    await v046.create(*SANDBOXES, sandbox("box"), field_validation="Strict", dry_run="All")
    assert v046.api.objects["sandboxes"] == {}  # a dry run stores nothing
    (entry,) = v046.api.writes("sandboxes")
    assert (entry.method, entry.params, entry.api_version) == (
        "POST",
        {"fieldValidation": "Strict", "dryRun": "All"},
        "agents.x-k8s.io/v1alpha1",
    )
    await v046.create(
        AGENTCUBE,
        "v1alpha1",
        "codeinterpreters",
        {
            "apiVersion": f"{AGENTCUBE}/v1alpha1",
            "kind": "CodeInterpreter",
            "metadata": {"name": "ci"},
            "spec": {"template": {"image": "i"}},
        },
    )
    assert v046.api.writes("codeinterpreters")[0].params == {}


async def test_the_older_endpoints_stay_lenient() -> None:
    def setup(api: FakeApi) -> None:
        api.install("sandboxes", group=SANDBOX_GROUP, version="v1alpha1", writable=True)

    async with served(setup) as api:
        from kubernetes.client import ApiClient, Configuration

        client: Any = ApiClient(Configuration(host=api.url))
        cluster = Cluster(api, client)
        try:
            body: dict[str, Any] = {
                "apiVersion": f"{SANDBOX_GROUP}/v1alpha1",
                "kind": "Sandbox",
                "metadata": {"name": "box"},
                "spec": {"lifecycle": {}},
            }
            reply = await cluster.create(*SANDBOXES, body, field_validation="Strict")
            assert reply.status == 201 and reply.body["spec"] == {"lifecycle": {}}
            bad_name = dict(body, metadata={"name": "Box"})
            assert (await cluster.create(*SANDBOXES, bad_name)).status == 422
        finally:
            client.close()


async def test_list_selectors(v046: Cluster) -> None:
    for name, labels in (("a", {"tier": "warm", "pool": "x"}), ("b", {"tier": "cold"}), ("c", {})):
        body = sandbox(name)
        body["metadata"]["labels"] = labels
        assert (await v046.create(*SANDBOXES, body)).status == 201

    async def names(**selectors: str) -> list[str]:
        reply = await v046.custom(
            "list_namespaced_custom_object", *SANDBOXES[:2], NS, "sandboxes", **selectors
        )
        assert reply.status == 200, reply.body
        return [item["metadata"]["name"] for item in reply.body["items"]]

    assert await names(label_selector="tier in (warm,cold),!pool") == ["b"]
    assert await names(label_selector="tier notin (warm)") == ["b", "c"]
    assert await names(label_selector="tier!=cold,pool") == ["a"]
    assert await names(label_selector="tier==warm") == ["a"]
    assert await names(field_selector="metadata.name!=a") == ["b", "c"]
    unsupported = await v046.custom(
        "list_namespaced_custom_object", *SANDBOXES[:2], NS, "sandboxes",
        field_selector="spec.replicas=1",
    )  # fmt: skip
    assert (unsupported.status, unsupported.body["message"]) == (
        400, "field label not supported: spec.replicas"
    )  # fmt: skip
