"""The kubernetes backend's volumes: PersistentVolumeClaims in the tenant's namespace
(volume_manifests.py says how they are named and labelled).

Reads go to the API (volumes are few and read rarely: list, get, and a Create that mounts
some). A tenant sees only its own namespace's claims, and only ours among them; another
tenant's volume is NOT_FOUND like a missing one. A volume that a live sandbox mounts cannot
be deleted (409), as locally; Kubernetes would otherwise keep the claim Terminating until
the pod is gone (`kubernetes.io/pvc-protection`), which no E2B client expects.

Not here: the volume content API, which needs the files where the lifecycle service runs
(local mode); in Kubernetes mode it would need a pod mounting the claim, which this backend
does not run, so content requests get the platform API's 401 saying so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass

from extproc.core.errors import AlreadyExists, Conflict, NotFound
from extproc.core.volumes import (
    check_volume_name,
    is_volume_id,
    new_volume_id,
    volume_not_found,
    volume_token,
)  # fmt: skip
from extproc.k8s.resources import PERSISTENT_VOLUME_CLAIM, Resources
from extproc.lifecycle import volume_manifests as vm
from extproc.lifecycle.manifests import parse_time, rfc3339
from extproc.lifecycle.sandboxes import VolumeMount
from extproc.lifecycle.volume_paths import checked_mounts
from extproc.lifecycle.volumes import Volume


@dataclass(eq=False, repr=False)
class KubeVolumes:
    api: Resources
    _: KW_ONLY
    size_mb: int
    storage_class: str
    access_mode: str
    seed: Callable[[], bytes]
    clock: Callable[[], float]

    def __post_init__(self) -> None:
        if self.access_mode not in vm.ACCESS_MODES:
            raise ValueError(f"volume access mode must be one of {', '.join(vm.ACCESS_MODES)}")

    def _volume(self, tenant: str, claim: dict[str, object]) -> Volume | None:
        fields = vm.volume_fields(claim)
        if fields is None or not is_volume_id(fields[0]):
            return None
        volume_id, name, created = fields
        token = volume_token(self.seed(), volume_id)
        return Volume(volume_id, tenant, name, parse_time(created) or 0.0, token)

    async def create(self, tenant: str, name: str) -> Volume:
        check_volume_name(name)
        volume_id = new_volume_id()
        body = vm.claim_object(
            name=name, volume_id=volume_id, namespace=tenant, size_mb=self.size_mb,
            storage_class=self.storage_class, access_mode=self.access_mode,
            created_at=rfc3339(self.clock()),
        )  # fmt: skip
        try:
            made = await self.api.create(PERSISTENT_VOLUME_CLAIM, tenant, body)
        except AlreadyExists as error:
            raise Conflict(f"a volume named {name!r} already exists") from error
        volume = self._volume(tenant, made or body)
        if volume is None:
            raise RuntimeError("the API server changed the claim we made")
        return volume

    async def owned(self, tenant: str) -> list[Volume]:
        claims = await self.api.list(PERSISTENT_VOLUME_CLAIM, tenant, vm.LABEL_VOLUME_ID)
        found = [v for v in (self._volume(tenant, c) for c in claims) if v is not None]
        return sorted(found, key=lambda v: (v.created_at, v.volume_id))

    async def get(self, tenant: str, volume_id: str) -> Volume:
        if is_volume_id(volume_id):
            selector = f"{vm.LABEL_VOLUME_ID}={volume_id}"
            for claim in await self.api.list(PERSISTENT_VOLUME_CLAIM, tenant, selector):
                volume = self._volume(tenant, claim)
                if volume is not None and volume.volume_id == volume_id:
                    return volume
        raise volume_not_found(volume_id)

    async def delete(
        self, tenant: str, volume_id: str, mounters: Callable[[Volume], list[str]]
    ) -> None:
        """Delete the claim, unless `mounters` names live sandboxes that mount it."""
        volume = await self.get(tenant, volume_id)
        mounted_by = mounters(volume)
        if mounted_by:
            shown = ", ".join(sorted(mounted_by)[:5])
            raise Conflict(
                f"volume {volume.name!r} is mounted by {len(mounted_by)} live sandbox(es) "
                f"({shown}); kill them before deleting it"
            )
        try:
            await self.api.delete(PERSISTENT_VOLUME_CLAIM, tenant, vm.claim_name(volume.name))
        except NotFound as error:
            raise volume_not_found(volume_id) from error

    async def resolve(
        self, tenant: str, asked: Sequence[VolumeMount]
    ) -> list[tuple[str, VolumeMount]]:
        """(claim name, mount) for each mount a Create asks for, checked."""
        resolved = []
        for mount in checked_mounts(asked):
            claim = vm.claim_name(mount.name)
            try:
                found = await self.api.get(PERSISTENT_VOLUME_CLAIM, tenant, claim)
            except NotFound:
                found = {}
            if self._volume(tenant, found) is None:
                raise NotFound(f"volume {mount.name!r} not found")
            resolved.append((claim, mount))
        return resolved
