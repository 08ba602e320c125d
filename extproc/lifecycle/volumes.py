"""The local backend's volumes: which exist, whose they are, which sandboxes mount them.

A volume belongs to the tenant that created it; every lookup takes the tenant, and another
tenant's volume is NOT_FOUND exactly as a missing one (list shows only one's own, a mount
by name finds only one's own). Names are unique per tenant, as E2B's volumeMounts name
volumes, not ids.

Deleting a volume that a live sandbox (running or paused) mounts is refused (409): the
sandbox would otherwise keep writing into a volume that no longer exists, and its data would
live on invisibly until it ended. Kill the sandboxes first. The check and the mounts it
guards are serialised on the event loop: a Create reserves its volumes (synchronously,
before its first await) and a delete sees the reservation.

Everything here is in memory, mirrored to `volume_store` before a call returns; the files
are `volume_mounting`'s and the content API's `volume_files`'.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from extproc.core.errors import Conflict, NotFound, ResourceExhausted, Unimplemented
from extproc.core.volumes import (
    check_volume_name,
    check_volume_token,
    is_volume_id,
    new_volume_id,
    volume_not_found,
    volume_token,
)  # fmt: skip
from extproc.lifecycle import volume_mounting
from extproc.lifecycle.sandboxes import VolumeMount
from extproc.lifecycle.volume_files import VolumeFiles
from extproc.lifecycle.volume_paths import checked_mounts
from extproc.lifecycle.volume_store import MountRow, VolumeRow, VolumeStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Volume:
    volume_id: str
    tenant: str
    name: str
    created_at: float
    # The content API's bearer token (core/volumes.py); never stored.
    token: str


@dataclass
class Reservation:
    """Volumes a Create is about to mount: held against deletion from the moment they are
    resolved until the sandbox ends (or the Create fails)."""

    holder: str
    mounts: tuple[tuple[Volume, VolumeMount], ...]
    attached: bool = False


@dataclass
class _Mounted:
    volumes: list[tuple[Volume, VolumeMount]] = field(default_factory=list)


class LocalVolumes:
    def __init__(
        self, state_dir: Path, size_mb: int, max_volumes: int, clock: Callable[[], float],
        unavailable: str = "", max_per_tenant: int | None = None,
    ) -> None:  # fmt: skip
        self.dir = state_dir / "volumes"
        self._size_mb = size_mb
        self._max = max_volumes
        # each tenant's share of `max_volumes` (None: no share of its own)
        self._max_per_tenant = max_per_tenant
        self._clock = clock
        # Why this backend cannot have volumes ("" when it can).
        self._unavailable = unavailable
        self._store = VolumeStore(state_dir / "volumes.sqlite3")
        self._seed = b""
        self._volumes: dict[str, Volume] = {}
        self._creating: set[tuple[str, str]] = set()
        # volume id -> who holds it: sandbox ids, or a Create's reservation key
        self._holders: dict[str, set[str]] = {}
        self._mounted: dict[str, _Mounted] = {}
        self._reservations = itertools.count()
        self._opened = False

    # -- start and stop -------------------------------------------------------------------

    async def start(self, seed: bytes) -> None:
        if self._unavailable:
            return
        self._seed = seed
        self.dir.mkdir(mode=0o700, exist_ok=True)
        rows, mounts = await self._store.open()
        self._opened = True
        for row in rows:
            directory = self.dir / row.volume_id
            try:
                await asyncio.to_thread(volume_mounting.mount_image, directory)
            except Exception:
                log.exception("volume %s (%s of %s) cannot be mounted; it is left out",
                              row.volume_id, row.name, row.tenant)  # fmt: skip
                continue
            self._volumes[row.volume_id] = self._volume(row)
        for mount in mounts:
            volume = self._volumes.get(mount.volume_id)
            if volume is not None:
                self._hold(volume.volume_id, mount.sandbox_id)
                self._mounted.setdefault(mount.sandbox_id, _Mounted()).volumes.append(
                    (volume, mount.mount)
                )

    async def adopted(self, live: Sequence[str]) -> dict[str, tuple[VolumeMount, ...]]:
        """After re-adoption: forget the mounts of sandboxes that did not survive; the
        volume mounts of those that did."""
        if not self._opened:
            return {}
        kept = set(live)
        for sandbox_id in [s for s in self._mounted if s not in kept]:
            self._unhold(sandbox_id)
        await self._store.drop_mounts_except(kept)
        return {s: tuple(m for _, m in mounted.volumes) for s, mounted in self._mounted.items()}

    async def close(self) -> None:
        """Unmount the host's mounts (sandboxes that live on keep their own copies; the
        next start mounts them again)."""
        if not self._opened:
            return
        for volume_id in list(self._volumes):
            await asyncio.to_thread(volume_mounting.unmount_image, self.dir / volume_id)
        await self._store.close()
        self._opened = False

    # -- the registry ---------------------------------------------------------------------

    def _require(self) -> None:
        if self._unavailable:
            raise Unimplemented(self._unavailable)

    def _volume(self, row: VolumeRow) -> Volume:
        token = volume_token(self._seed, row.volume_id)
        return Volume(row.volume_id, row.tenant, row.name, row.created_at, token)

    def _named(self, tenant: str, name: str) -> Volume | None:
        for volume in self._volumes.values():
            if volume.tenant == tenant and volume.name == name:
                return volume
        return None

    async def create(self, tenant: str, name: str) -> Volume:
        self._require()
        check_volume_name(name)
        if self._named(tenant, name) is not None or (tenant, name) in self._creating:
            raise Conflict(f"a volume named {name!r} already exists")
        if len(self._volumes) + len(self._creating) >= self._max:
            raise ResourceExhausted(
                f"this gateway keeps at most {self._max} volumes; delete one or raise --max-volumes"
            )
        held = sum(v.tenant == tenant for v in self._volumes.values()) + sum(
            creating == tenant for creating, _ in self._creating
        )
        if self._max_per_tenant is not None and held >= self._max_per_tenant:
            raise ResourceExhausted(
                f"a tenant keeps at most {self._max_per_tenant} volumes; delete one first"
            )
        volume_id = new_volume_id()
        while volume_id in self._volumes:
            volume_id = new_volume_id()
        row = VolumeRow(volume_id, tenant, name, self._clock())
        directory = self.dir / volume_id
        self._creating.add((tenant, name))
        try:
            await asyncio.to_thread(volume_mounting.create_image, directory, self._size_mb)
            await self._store.add_volume(row)
        except BaseException:
            # mkfs, the mount or the row failed: leave nothing behind
            await asyncio.to_thread(volume_mounting.remove, directory)
            raise
        finally:
            self._creating.discard((tenant, name))
        volume = self._volume(row)
        self._volumes[volume_id] = volume
        return volume

    def owned(self, tenant: str) -> list[Volume]:
        self._require()
        owned = (v for v in self._volumes.values() if v.tenant == tenant)
        return sorted(owned, key=lambda v: (v.created_at, v.volume_id))

    def get(self, tenant: str, volume_id: str) -> Volume:
        self._require()
        volume = self._volumes.get(volume_id) if is_volume_id(volume_id) else None
        if volume is None or volume.tenant != tenant:
            raise volume_not_found(volume_id)
        return volume

    async def delete(self, tenant: str, volume_id: str) -> None:
        volume = self.get(tenant, volume_id)
        holders = sorted(self._holders.get(volume_id, ()))
        if holders:
            sandboxes = [h for h in holders if not h.startswith("create:")]
            shown = ", ".join(sandboxes[:5]) or "a sandbox being created"
            raise Conflict(
                f"volume {volume.name!r} is mounted by {len(holders)} live sandbox(es) "
                f"({shown}); kill them before deleting it"
            )
        del self._volumes[volume_id]  # from here on no Create can reserve it
        try:
            await self._store.remove_volume(volume_id)
        except BaseException:
            self._volumes[volume_id] = volume
            raise
        try:
            await asyncio.to_thread(volume_mounting.remove, self.dir / volume_id)
        except Exception:
            log.exception("volume %s is deleted but its files could not be removed", volume_id)

    # -- mounts ---------------------------------------------------------------------------

    def _hold(self, volume_id: str, holder: str) -> None:
        self._holders.setdefault(volume_id, set()).add(holder)

    def _unhold(self, holder: str) -> None:
        for volume_id in list(self._holders):
            self._holders[volume_id].discard(holder)
            if not self._holders[volume_id]:
                del self._holders[volume_id]
        self._mounted.pop(holder, None)

    def reserve(self, tenant: str, asked: Sequence[VolumeMount]) -> Reservation:
        """Check the mounts a Create asks for and hold their volumes (no await: a delete
        cannot slip in between the check and the hold)."""
        self._require()
        mounts = checked_mounts(asked)
        resolved = []
        for mount in mounts:
            volume = self._named(tenant, mount.name)
            if volume is None:
                raise NotFound(f"volume {mount.name!r} not found")
            resolved.append((volume, mount))
        reservation = Reservation(f"create:{next(self._reservations)}", tuple(resolved))
        for volume, _ in resolved:
            self._hold(volume.volume_id, reservation.holder)
        return reservation

    def cancel(self, reservation: Reservation) -> None:
        """Drop a reservation that was never attached (idempotent)."""
        if not reservation.attached:
            self._unhold(reservation.holder)

    async def attach(
        self, reservation: Reservation, sandbox_id: str, supervisor: tuple[int, int],
        uid_base: int,
    ) -> tuple[VolumeMount, ...]:  # fmt: skip
        """Mount the reserved volumes into the running sandbox whose supervisor is (pid,
        start ticks); from then on the sandbox holds them until `release`."""
        mounts = [(self.dir / v.volume_id, m.path) for v, m in reservation.mounts]
        await asyncio.to_thread(volume_mounting.attach, *supervisor, uid_base, mounts)
        for volume, _ in reservation.mounts:
            self._hold(volume.volume_id, sandbox_id)
        self._mounted[sandbox_id] = _Mounted(list(reservation.mounts))
        self._unhold(reservation.holder)
        reservation.attached = True
        rows = [MountRow(sandbox_id, v.volume_id, m) for v, m in reservation.mounts]
        await self._store.set_mounts(sandbox_id, rows)
        return tuple(m for _, m in reservation.mounts)

    async def reattach(self, sandbox_id: str, supervisor: tuple[int, int], uid_base: int) -> None:
        """Mount a resumed sandbox's volumes again (its processes, hence its mount
        namespace, are new)."""
        mounted = self._mounted.get(sandbox_id)
        if mounted is None:
            return
        mounts = [(self.dir / v.volume_id, m.path) for v, m in mounted.volumes]
        await asyncio.to_thread(volume_mounting.attach, *supervisor, uid_base, mounts)

    async def release(self, sandbox_id: str) -> None:
        """The sandbox has ended: its volumes are free to delete."""
        if sandbox_id not in self._mounted:
            return
        self._unhold(sandbox_id)
        if self._opened:
            await self._store.set_mounts(sandbox_id, [])

    # -- content --------------------------------------------------------------------------

    def for_token(self, volume_id: str, token: str) -> Volume | None:
        """The volume `token` opens, None if it opens none (a missing volume, another
        volume's token: the caller cannot tell which)."""
        if self._unavailable or not is_volume_id(volume_id):
            return None
        valid = check_volume_token(self._seed, volume_id, token)
        volume = self._volumes.get(volume_id)
        return volume if valid and volume is not None else None

    def files(self, volume: Volume) -> VolumeFiles:
        return VolumeFiles(volume_mounting.mount_point(self.dir / volume.volume_id))
