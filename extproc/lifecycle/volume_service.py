"""gRPC VolumeService over a backend's volumes: protobuf in, a backend call, protobuf out.

Unlike sandboxes, volumes have no every-tenant reader: a call without a tenant is refused
whatever scope it claims (`handling.one_tenant`). Errors go through the one table in
`status` (`handling`).
"""

from __future__ import annotations

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2_grpc as pb_grpc
from extproc.lifecycle.backend import VolumeBackend
from extproc.lifecycle.handling import OneCall, one_tenant
from extproc.lifecycle.messages import each, volume_pb

_rpc = OneCall[VolumeBackend]()


class VolumeServicer(pb_grpc.VolumeServiceServicer):  # type: ignore[misc]
    """Every RPC is one backend call and its answer: one row each (`OneCall`)."""

    def __init__(self, backend: VolumeBackend) -> None:
        self._backend = backend

    CreateVolume = _rpc.answer(one_tenant, lambda b, r: b.create_volume(r.tenant, r.name),
        pb.CreateVolumeResponse, volume=volume_pb)  # fmt: skip
    ListVolumes = _rpc.answer(one_tenant, lambda b, r: b.list_volumes(r.tenant),
        pb.ListVolumesResponse, volumes=each(volume_pb))  # fmt: skip
    GetVolume = _rpc.answer(one_tenant, lambda b, r: b.get_volume(r.tenant, r.volume_id),
        pb.GetVolumeResponse, volume=volume_pb)  # fmt: skip
    DeleteVolume = _rpc.answer(one_tenant, lambda b, r: b.delete_volume(r.tenant, r.volume_id),
        pb.DeleteVolumeResponse)  # fmt: skip
