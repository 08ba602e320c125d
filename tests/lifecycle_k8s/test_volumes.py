"""Volumes in Kubernetes mode against the fake cluster: a PersistentVolumeClaim per volume in
the tenant's namespace, and a Create that mounts volumes starts a pod of its own from the
template (a warm pool's pods cannot gain volumes) with the claims in it."""

from __future__ import annotations

import pytest

from extproc.core.errors import Conflict, NotFound
from extproc.lifecycle import volume_manifests as vm
from extproc.lifecycle.kubernetes import KubernetesBackend
from extproc.lifecycle.sandboxes import VolumeMount

from .conftest import POOLED, Cluster, name_of

pytestmark = pytest.mark.asyncio(loop_scope="package")


async def test_a_create_with_volumes_skips_the_warm_pool_and_mounts_the_claims(
    cluster: Cluster, backend: KubernetesBackend, warm_pool: str
) -> None:
    volume = await backend.create_volume(cluster.tenant, "data")
    claim_name = vm.claim_name("data")
    claim = cluster.stored("persistentvolumeclaims", claim_name)
    assert claim is not None
    assert claim["metadata"]["labels"][vm.LABEL_VOLUME_ID] == volume.volume_id
    assert [v.volume_id for v in await backend.list_volumes(cluster.tenant)] == [volume.volume_id]
    assert await backend.list_volumes(cluster.other) == []
    with pytest.raises(NotFound):
        await backend.get_volume(cluster.other, volume.volume_id)

    mounts = (VolumeMount("data", "/mnt/data"),)
    sandbox = await backend.create(cluster.spec(POOLED, volume_mounts=mounts))
    name = name_of(sandbox.sandbox_id)
    assert sandbox.volume_mounts == mounts
    assert (await backend.get(sandbox.sandbox_id, cluster.tenant)).volume_mounts == mounts
    assert cluster.stored("sandboxclaims", name) is None, "the warm pool was not used"
    assert cluster.stored("sandboxes", warm_pool) is not None  # still waiting in the pool
    pod = cluster.stored("pods", name)
    assert pod is not None
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    (mounted,) = [m for m in pod["spec"]["containers"][0]["volumeMounts"]
                  if m["mountPath"] == "/mnt/data"]  # fmt: skip
    assert volumes[mounted["name"]]["persistentVolumeClaim"] == {"claimName": claim_name}
    assert pod["spec"]["securityContext"]["fsGroup"] == 1000

    # another tenant cannot mount it, and it is not deleted under its sandbox
    with pytest.raises(NotFound):
        await backend.create(cluster.spec(tenant=cluster.other, volume_mounts=mounts))
    with pytest.raises(Conflict):
        await backend.delete_volume(cluster.tenant, volume.volume_id)
    await backend.kill(sandbox.sandbox_id, cluster.tenant)
    await backend.delete_volume(cluster.tenant, volume.volume_id)
    assert cluster.stored("persistentvolumeclaims", claim_name) is None
    with pytest.raises(NotFound):
        await backend.get_volume(cluster.tenant, volume.volume_id)
