"""The platform API's volume operations in the edge, against a fake VolumeService: E2B's
statuses and JSON shapes, the tenant passed on, lifecycle's errors as E2B errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2_grpc as pb_grpc
from extproc.edge.platform import PlatformApi, PlatformRequest

VOLUME = pb.Volume(volume_id="v" * 20, name="data", tenant="team-a", token="vol_" + "0" * 64)


class FakeVolumes(pb_grpc.VolumeServiceServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def _owned(self, request: Any, context: Any) -> None:
        if request.volume_id != VOLUME.volume_id or request.tenant != VOLUME.tenant:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"volume {request.volume_id} not found")

    async def CreateVolume(self, request: Any, context: Any) -> pb.CreateVolumeResponse:
        self.calls.append(("CreateVolume", request))
        if request.name == "taken":
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "a volume named 'taken'")
        return pb.CreateVolumeResponse(volume=VOLUME)

    async def ListVolumes(self, request: Any, context: Any) -> pb.ListVolumesResponse:
        self.calls.append(("ListVolumes", request))
        return pb.ListVolumesResponse(volumes=[VOLUME] if request.tenant == VOLUME.tenant else [])

    async def GetVolume(self, request: Any, context: Any) -> pb.GetVolumeResponse:
        await self._owned(request, context)
        return pb.GetVolumeResponse(volume=VOLUME)

    async def DeleteVolume(self, request: Any, context: Any) -> pb.DeleteVolumeResponse:
        await self._owned(request, context)
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "mounted by 1 live sandbox")
        return pb.DeleteVolumeResponse()


@pytest.fixture
async def api() -> AsyncIterator[tuple[PlatformApi, FakeVolumes]]:
    fake = FakeVolumes()
    server = grpc.aio.server()
    pb_grpc.add_VolumeServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield PlatformApi(channel, "e2b.test"), fake
    finally:
        await server.stop(0)


async def _call(
    api: PlatformApi, method: str, path: str, body: bytes = b"", tenant: str = "team-a"
) -> tuple[int, Any]:
    _, answer = await api.handle(PlatformRequest(method, path, {}, body, tenant))
    return answer.status, json.loads(answer.body) if answer.body else None


async def test_volume_operations_answer_as_e2b(api: tuple[PlatformApi, FakeVolumes]) -> None:
    platform, fake = api
    token = {"volumeID": VOLUME.volume_id, "name": "data", "token": VOLUME.token}
    assert await _call(platform, "POST", "/volumes", b'{"name": "data"}') == (201, token)
    assert fake.calls[-1][1].tenant == "team-a" and fake.calls[-1][1].name == "data"
    listed = [{"volumeID": VOLUME.volume_id, "name": "data"}]
    assert await _call(platform, "GET", "/volumes") == (200, listed)
    assert await _call(platform, "GET", "/volumes", tenant="team-b") == (200, [])
    assert await _call(platform, "GET", f"/volumes/{VOLUME.volume_id}") == (200, token)


@pytest.mark.parametrize(
    ("method", "path", "body", "tenant", "status"),
    [
        ("POST", "/volumes", b"{}", "team-a", 400),  # name is required
        ("POST", "/volumes", b'{"name": 5}', "team-a", 400),
        ("POST", "/volumes", b"[]", "team-a", 400),
        ("POST", "/volumes", b'{"name": "taken"}', "team-a", 409),
        ("GET", f"/volumes/{VOLUME.volume_id}", b"", "team-b", 404),  # another tenant's
        ("DELETE", f"/volumes/{VOLUME.volume_id}", b"", "team-b", 404),
        ("DELETE", f"/volumes/{VOLUME.volume_id}", b"", "team-a", 409),  # mounted
        ("GET", "/volumes/../sandboxes", b"", "team-a", 404),
        ("PATCH", f"/volumes/{VOLUME.volume_id}", b"", "team-a", 405),
        # a content request that Envoy did not route to the content server had no token
        ("GET", f"/volumecontent/{VOLUME.volume_id}/file?path=/x", b"", "team-a", 401),
    ],
)
async def test_volume_errors_are_e2b_errors(
    api: tuple[PlatformApi, FakeVolumes],
    method: str,
    path: str,
    body: bytes,
    tenant: str,
    status: int,
) -> None:
    got, error = await _call(api[0], method, path, body, tenant)
    assert (got, set(error), error["code"]) == (status, {"code", "message"}, status)
