"""gRPC VolumeService over a backend's volumes: protobuf in, a backend call, protobuf out.

Unlike sandboxes, volumes have no every-tenant reader: a call without a tenant is refused
whatever scope it claims. Errors go through service.py's one table (status.py).
"""

from __future__ import annotations

from typing import Any, Protocol

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2_grpc as pb_grpc
from extproc.core.errors import InvalidArgument, Unimplemented
from extproc.lifecycle.service import _ts, _unary
from extproc.lifecycle.volumes import Volume


class VolumeBackend(Protocol):
    """What a backend offers for volumes (both backends; each raises domain errors)."""

    async def create_volume(self, tenant: str, name: str) -> Volume: ...

    async def list_volumes(self, tenant: str) -> list[Volume]: ...

    async def get_volume(self, tenant: str, volume_id: str) -> Volume: ...

    async def delete_volume(self, tenant: str, volume_id: str) -> None: ...


def volume_pb(volume: Volume) -> pb.Volume:
    return pb.Volume(
        volume_id=volume.volume_id, name=volume.name, tenant=volume.tenant,
        token=volume.token, created_at=_ts(volume.created_at),
    )  # fmt: skip


def _tenant(request: Any) -> str:
    if not request.tenant:
        raise InvalidArgument("tenant is required: volumes have no every-tenant reader")
    return str(request.tenant)


class VolumeServicer(pb_grpc.VolumeServiceServicer):  # type: ignore[misc]
    def __init__(self, backend: object) -> None:
        # A backend without volumes answers UNIMPLEMENTED, saying so.
        self._backend: VolumeBackend | None = (
            backend if hasattr(backend, "create_volume") else None  # type: ignore[assignment]
        )

    def _volumes(self) -> VolumeBackend:
        if self._backend is None:
            raise Unimplemented("volumes are not supported by this lifecycle backend")
        return self._backend

    @_unary
    async def CreateVolume(self, request: Any, context: Any) -> pb.CreateVolumeResponse:
        volume = await self._volumes().create_volume(_tenant(request), request.name)
        return pb.CreateVolumeResponse(volume=volume_pb(volume))

    @_unary
    async def ListVolumes(self, request: Any, context: Any) -> pb.ListVolumesResponse:
        volumes = await self._volumes().list_volumes(_tenant(request))
        return pb.ListVolumesResponse(volumes=[volume_pb(v) for v in volumes])

    @_unary
    async def GetVolume(self, request: Any, context: Any) -> pb.GetVolumeResponse:
        volume = await self._volumes().get_volume(_tenant(request), request.volume_id)
        return pb.GetVolumeResponse(volume=volume_pb(volume))

    @_unary
    async def DeleteVolume(self, request: Any, context: Any) -> pb.DeleteVolumeResponse:
        await self._volumes().delete_volume(_tenant(request), request.volume_id)
        return pb.DeleteVolumeResponse()
