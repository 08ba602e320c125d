"""Volumes in Kubernetes mode without a cluster: the claims and pod template pieces
(volume_manifests) and KubeVolumes against an in-memory stand-in for the API's calls."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from extproc.core.errors import AlreadyExists, Conflict, InvalidArgument, NotFound
from extproc.k8s.resources import PERSISTENT_VOLUME_CLAIM, Kind
from extproc.lifecycle import volume_manifests as vm
from extproc.lifecycle.kube_volumes import KubeVolumes
from extproc.lifecycle.sandboxes import VolumeMount
from extproc.lifecycle.volumes import Volume

Obj = dict[str, Any]


class Claims:
    """What KubeVolumes calls of `Resources`, on a dict of claims per namespace."""

    def __init__(self) -> None:
        self.stored: dict[tuple[str, str], Obj] = {}

    async def create(self, kind: Kind, namespace: str, body: Obj) -> Obj:
        assert kind is PERSISTENT_VOLUME_CLAIM and body["metadata"]["namespace"] == namespace
        key = (namespace, body["metadata"]["name"])
        if key in self.stored:
            raise AlreadyExists("already exists")
        self.stored[key] = copy.deepcopy(body)
        return copy.deepcopy(body)

    async def get(self, kind: Kind, namespace: str, name: str) -> Obj:
        if (namespace, name) not in self.stored:
            raise NotFound("not found")
        return copy.deepcopy(self.stored[namespace, name])

    async def list(self, kind: Kind, namespace: str, label_selector: str = "") -> list[Obj]:
        key, _, value = label_selector.partition("=")
        return [
            copy.deepcopy(claim) for (ns, _), claim in self.stored.items()
            if ns == namespace and key in claim["metadata"]["labels"]
            and (not value or claim["metadata"]["labels"][key] == value)
        ]  # fmt: skip

    async def delete(self, kind: Kind, namespace: str, name: str) -> None:
        if self.stored.pop((namespace, name), None) is None:
            raise NotFound("not found")


def _volumes(claims: Claims) -> KubeVolumes:
    return KubeVolumes(
        claims,  # type: ignore[arg-type]
        size_mb=2048, storage_class="fast", access_mode="ReadWriteMany",
        seed=lambda: b"s" * 32, clock=lambda: 1_700_000_000.0,
    )  # fmt: skip


async def test_a_volume_is_a_labelled_claim_in_its_tenants_namespace() -> None:
    claims = Claims()
    volumes = _volumes(claims)
    made = await volumes.create("team-a", "My_Data")
    ((namespace, name), claim) = next(iter(claims.stored.items()))
    assert (namespace, name) == ("team-a", vm.claim_name("My_Data"))
    assert claim["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "agentcube-e2b",
        vm.LABEL_VOLUME_ID: made.volume_id,
    }
    assert claim["spec"] == {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": "2048Mi"}},
        "storageClassName": "fast",
    }
    assert made.token.startswith("vol_") and made.created_at == 1_700_000_000.0
    assert await volumes.get("team-a", made.volume_id) == made
    assert await volumes.owned("team-a") == [made]
    # the API server keeps a name unique (the claim's name is the name's digest)
    with pytest.raises(Conflict):
        await volumes.create("team-a", "My_Data")
    with pytest.raises(InvalidArgument):
        await volumes.create("team-a", "no spaces")


async def test_other_tenants_and_other_claims_are_not_volumes() -> None:
    claims = Claims()
    volumes = _volumes(claims)
    mine = await volumes.create("team-a", "data")
    assert await volumes.owned("team-b") == []
    for tenant, volume_id in (("team-b", mine.volume_id), ("team-a", "x" * 20), ("team-a", "..")):
        with pytest.raises(NotFound):
            await volumes.get(tenant, volume_id)
    with pytest.raises(NotFound):
        await volumes.delete("team-b", mine.volume_id, lambda volume: [])
    # a claim someone labelled like ours but named otherwise is not one of ours
    forged = vm.claim_object(
        name="data", volume_id="f" * 20, namespace="team-a", size_mb=1, storage_class="",
        access_mode="ReadWriteOnce", created_at="2024-01-01T00:00:00Z",
    )  # fmt: skip
    forged["metadata"]["name"] = "tenants-own-claim"
    claims.stored["team-a", "tenants-own-claim"] = forged
    assert [v.volume_id for v in await volumes.owned("team-a")] == [mine.volume_id]


async def test_delete_refuses_while_mounted_and_mounts_resolve_by_name() -> None:
    claims = Claims()
    volumes = _volumes(claims)
    made = await volumes.create("team-a", "data")
    mounted: list[Volume] = []

    def mounters(volume: Volume) -> list[str]:
        mounted.append(volume)
        return ["sbx1"]

    with pytest.raises(Conflict, match="sbx1"):
        await volumes.delete("team-a", made.volume_id, mounters)
    assert mounted == [made]
    resolved = await volumes.resolve("team-a", [VolumeMount("data", "/mnt/data/")])
    assert resolved == [(vm.claim_name("data"), VolumeMount("data", "/mnt/data"))]
    with pytest.raises(NotFound):
        await volumes.resolve("team-b", [VolumeMount("data", "/d")])
    with pytest.raises(InvalidArgument):
        await volumes.resolve("team-a", [VolumeMount("data", "/opt")])
    await volumes.delete("team-a", made.volume_id, lambda volume: [])
    assert claims.stored == {}


def test_a_sandbox_that_mounts_volumes_gets_them_in_its_pod() -> None:
    body: Obj = {
        "metadata": {"name": "e2b-x", "annotations": {"other": "kept"}},
        "spec": {"podTemplate": {"spec": {"containers": [{"name": "code-interpreter"}]}}},
    }
    mounts = [
        ("claim-a", VolumeMount("a", "/mnt/a")),
        ("claim-b", VolumeMount("b", "/mnt/b")),
        ("claim-a", VolumeMount("a", "/home/user/a")),
    ]
    out = vm.with_volumes(body, mounts)
    pod = out["spec"]["podTemplate"]["spec"]
    assert pod["volumes"] == [
        {"name": "e2b-volume-0", "persistentVolumeClaim": {"claimName": "claim-a"}},
        {"name": "e2b-volume-1", "persistentVolumeClaim": {"claimName": "claim-b"}},
    ]
    assert pod["containers"][0]["volumeMounts"] == [
        {"name": "e2b-volume-0", "mountPath": "/mnt/a"},
        {"name": "e2b-volume-1", "mountPath": "/mnt/b"},
        {"name": "e2b-volume-0", "mountPath": "/home/user/a"},
    ]
    assert pod["securityContext"] == {"fsGroup": 1000, "fsGroupChangePolicy": "OnRootMismatch"}
    notes = out["metadata"]["annotations"]
    assert notes["other"] == "kept"
    assert vm.volume_mounts_of(notes) == tuple(m for _, m in mounts)
    assert vm.volume_mounts_of({vm.MOUNTS: "not json"}) == ()
    untouched: Obj = {"spec": {"podTemplate": {"spec": {"containers": [{}]}}}}
    assert vm.with_volumes(untouched, []) == untouched
