"""E2B's volume operations on the platform API: `/volumes` and `/volumes/{volumeID}`.

Each is one VolumeService call with the tenant ext_authz established; lifecycle hides other
tenants' volumes as NOT_FOUND (404, never 403). The answers carry the volume's content token
(`VolumeAndToken`), which the SDK then sends to the volume content API; that API is served
by the lifecycle service through Envoy on the same host, so no `domain` is sent (the SDK
then uses `E2B_VOLUME_API_URL`, which `up` prints).
"""

from __future__ import annotations

from typing import Any

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc.core.errors import InvalidArgument
from extproc.edge import rest_requests
from extproc.edge.platform_operation import Call, PlatformContext, PlatformRequest
from extproc.edge.rest_wire import Answer, json_answer, no_content


def volume_json(volume: pb.Volume) -> dict[str, Any]:
    """E2B `Volume` (list)."""
    return {"volumeID": volume.volume_id, "name": volume.name}


def volume_and_token_json(volume: pb.Volume) -> dict[str, Any]:
    """E2B `VolumeAndToken` (create, get)."""
    return {**volume_json(volume), "token": volume.token}


def new_volume_name(body: bytes) -> str:
    """E2B's NewVolume: `{"name": ...}`; the name's pattern is checked by lifecycle."""
    name = rest_requests.json_object(body).get("name")
    if not isinstance(name, str):
        raise InvalidArgument("name is required and must be a string")
    return name


async def create(context: PlatformContext, request: PlatformRequest, call: Call) -> Answer:
    create = pb.CreateVolumeRequest(tenant=request.tenant, name=new_volume_name(request.body))
    reply = await context.volumes.CreateVolume(create, timeout=call.operation.deadline_s)
    return json_answer(201, volume_and_token_json(reply.volume))


async def list_all(context: PlatformContext, request: PlatformRequest, call: Call) -> Answer:
    reply = await context.volumes.ListVolumes(
        pb.ListVolumesRequest(tenant=request.tenant), timeout=call.operation.deadline_s
    )
    return json_answer(200, [volume_json(v) for v in reply.volumes])


async def get(context: PlatformContext, request: PlatformRequest, call: Call) -> Answer:
    reply = await context.volumes.GetVolume(
        pb.GetVolumeRequest(tenant=request.tenant, volume_id=call.resource_id),
        timeout=call.operation.deadline_s,
    )
    return json_answer(200, volume_and_token_json(reply.volume))


async def delete(context: PlatformContext, request: PlatformRequest, call: Call) -> Answer:
    await context.volumes.DeleteVolume(
        pb.DeleteVolumeRequest(tenant=request.tenant, volume_id=call.resource_id),
        timeout=call.operation.deadline_s,
    )
    return no_content()
