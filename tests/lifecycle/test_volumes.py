"""Volumes in the local backend, through its gRPC and the content API app, with real
sandboxes: shared between sandboxes with the right owner whatever their id blocks, kept per
tenant, refused with a reason when asked for wrongly, and never a way out of the volume."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2_grpc as pb_grpc
from extproc.lifecycle.local import LocalBackend
from extproc.lifecycle.server import Running, serving
from extproc.lifecycle.volume_content import VolumeContentApp

from .conftest import _assert_no_leak, make_settings
from .helpers import run_command

A, B = "tenant-a", "tenant-b"


@dataclasses.dataclass
class Volumes:
    running: Running
    sandboxes: pb_grpc.SandboxServiceStub
    volumes: pb_grpc.VolumeServiceStub

    @property
    def backend(self) -> LocalBackend:
        assert isinstance(self.running.backend, LocalBackend)
        return self.running.backend

    @contextlib.asynccontextmanager
    async def content(self, token: str) -> AsyncIterator[httpx.AsyncClient]:
        """A client of the content API app, in process, with `token`."""
        app = VolumeContentApp(self.backend.volumes)
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {token}"}
        try:
            async with httpx.AsyncClient(
                transport=transport, base_url="http://volumes", headers=headers
            ) as client:
                yield client
        finally:
            app.close()

    async def volume(self, tenant: str, name: str) -> pb.Volume:
        request = pb.CreateVolumeRequest(tenant=tenant, name=name)
        return (await self.volumes.CreateVolume(request)).volume

    async def create(self, tenant: str, *mounts: tuple[str, str]) -> pb.Sandbox:
        request = pb.CreateSandboxRequest(
            tenant=tenant,
            volume_mounts=[pb.VolumeMount(name=name, path=path) for name, path in mounts],
        )
        return (await self.sandboxes.CreateSandbox(request)).sandbox


@pytest.fixture
async def lifecycle(tmp_path: Path) -> AsyncIterator[Volumes]:
    settings = make_settings(tmp_path / "state", pool_size=1, volume_mb=64)
    async with (
        serving(settings) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        yield Volumes(
            running, pb_grpc.SandboxServiceStub(channel), pb_grpc.VolumeServiceStub(channel)
        )
    _assert_no_leak(tmp_path / "state")


async def _code(call: object) -> grpc.StatusCode:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as error:
        return error.code()
    raise AssertionError("the call succeeded")


async def test_a_volume_is_shared_between_sandboxes_and_owned_by_user(lifecycle: Volumes) -> None:
    data = await lifecycle.volume(A, "data")
    assert data.token.startswith("vol_")
    # the first sandbox comes from the warm pool (already running), the second is started cold
    first = await lifecycle.create(A, ("data", "/mnt/data"))
    second = await lifecycle.create(A, ("data", "/home/user/work"))
    assert [(m.name, m.path) for m in first.volume_mounts] == [("data", "/mnt/data")]
    first_base = lifecycle.backend._uid_base(lifecycle.backend.live[first.sandbox_id].sandbox)
    second_base = lifecycle.backend._uid_base(lifecycle.backend.live[second.sandbox_id].sandbox)
    assert first_base != second_base, "two sandboxes, two id blocks"

    code, out = await run_command(
        first, "id -un; echo hello > /mnt/data/note; mkdir /mnt/data/dir; "
        "stat -c '%U %u' /mnt/data /mnt/data/note /mnt/data/dir"
    )  # fmt: skip
    assert code == 0, out
    assert out.split("\n")[1:4] == ["user 1000"] * 3, out
    code, out = await run_command(
        second, "cat /home/user/work/note; stat -c '%U' /home/user/work/note; "
        "echo more >> /home/user/work/note && echo appended"
    )  # fmt: skip
    assert (code, out.split()) == (0, ["hello", "user", "appended"])

    # on the host the volume stores the ids inside sandboxes, not either sandbox's host ids
    root = lifecycle.backend.volumes.files(lifecycle.backend.volumes.get(A, data.volume_id)).root
    assert (root / "note").stat().st_uid == 1000
    async with lifecycle.content(data.token) as client:
        read = await client.get(f"/volumecontent/{data.volume_id}/file", params={"path": "/note"})
        assert read.content == b"hello\nmore\n"

    # in use: deleting is refused while any live sandbox mounts it
    delete = pb.DeleteVolumeRequest(tenant=A, volume_id=data.volume_id)
    in_use = await _code(lifecycle.volumes.DeleteVolume(delete))
    assert in_use == grpc.StatusCode.FAILED_PRECONDITION
    for sandbox in (first, second):
        await lifecycle.sandboxes.KillSandbox(
            pb.KillSandboxRequest(sandbox_id=sandbox.sandbox_id, tenant=A)
        )
    await lifecycle.volumes.DeleteVolume(delete)
    assert not (lifecycle.backend.volumes.dir / data.volume_id).exists()
    listed = await lifecycle.volumes.ListVolumes(pb.ListVolumesRequest(tenant=A))
    assert list(listed.volumes) == []


async def test_other_tenants_see_nothing(lifecycle: Volumes) -> None:
    mine = await lifecycle.volume(A, "v")
    stub = lifecycle.volumes
    assert list((await stub.ListVolumes(pb.ListVolumesRequest(tenant=B))).volumes) == []
    for call in (
        stub.GetVolume(pb.GetVolumeRequest(tenant=B, volume_id=mine.volume_id)),
        stub.DeleteVolume(pb.DeleteVolumeRequest(tenant=B, volume_id=mine.volume_id)),
        lifecycle.create(B, ("v", "/data")),
    ):
        assert await _code(call) == grpc.StatusCode.NOT_FOUND
    # B may have a volume of the same name: names are per tenant
    theirs = (await stub.CreateVolume(pb.CreateVolumeRequest(tenant=B, name="v"))).volume
    assert theirs.volume_id != mine.volume_id and theirs.token != mine.token
    # the content API: another volume's token opens nothing, and says nothing more
    async with lifecycle.content(theirs.token) as client:
        answer = await client.get(f"/volumecontent/{mine.volume_id}/path", params={"path": "/"})
        assert answer.status_code == 404
        assert answer.json() == {"code": 404, "message": f"volume {mine.volume_id} not found"}
        missing = "a" * 20
        unknown = await client.get(f"/volumecontent/{missing}/path", params={"path": "/"})
        assert unknown.status_code == 404
    assert await _code(stub.GetVolume(pb.GetVolumeRequest(tenant=A, volume_id="../x"))) == (
        grpc.StatusCode.NOT_FOUND
    )


async def test_bad_mount_paths_are_refused(lifecycle: Volumes) -> None:
    """The rules without a sandbox are tested in test_volume_paths; these need its files."""
    await lifecycle.volumes.CreateVolume(pb.CreateVolumeRequest(tenant=A, name="v"))
    for path, why in (
        ("/opt", "/opt/agentcube"),
        ("/bin/vol", "symlink"),  # Debian's /bin is a symlink to usr/bin: never followed
        ("/etc/hostname/x", "symlink or a file"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await lifecycle.create(A, ("v", path))
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert why in (raised.value.details() or ""), raised.value.details()
    # a refused create leaves the volume free, and nothing running
    listed = await lifecycle.volumes.ListVolumes(pb.ListVolumesRequest(tenant=A))
    volume_id = listed.volumes[0].volume_id
    await lifecycle.volumes.DeleteVolume(pb.DeleteVolumeRequest(tenant=A, volume_id=volume_id))
    assert list(lifecycle.backend.live) == []


async def test_bad_names_and_duplicates_are_refused(lifecycle: Volumes) -> None:
    stub = lifecycle.volumes
    for name in ("", "a/b", "a b", "é", "x" * 129):
        call = stub.CreateVolume(pb.CreateVolumeRequest(tenant=A, name=name))
        assert await _code(call) == grpc.StatusCode.INVALID_ARGUMENT, name
    await stub.CreateVolume(pb.CreateVolumeRequest(tenant=A, name="v"))
    again = stub.CreateVolume(pb.CreateVolumeRequest(tenant=A, name="v"))
    assert await _code(again) == grpc.StatusCode.FAILED_PRECONDITION
    for mounts in ([("v", "/a"), ("v", "/a/")], [("v", "/a"), ("v", "/a/b")]):
        assert await _code(lifecycle.create(A, *mounts)) == grpc.StatusCode.INVALID_ARGUMENT
    assert await _code(lifecycle.create(A, ("nope", "/a"))) == grpc.StatusCode.NOT_FOUND
    assert await _code(lifecycle.create(A, ("bad name", "/a"))) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )


async def test_a_sandbox_cannot_reach_out_through_its_volume(lifecycle: Volumes) -> None:
    volume = await lifecycle.volume(A, "v")
    sandbox = await lifecycle.create(A, ("v", "/v"))
    # as root inside: plant links to everything outside the volume a host process could follow
    code, out = await run_command(
        sandbox,
        "sudo sh -c 'ln -s /etc/shadow /v/shadow; ln -s / /v/root; ln -s ../../.. /v/up; "
        "mkfifo /v/fifo; echo secret > /v/real; "
        "ln /etc/passwd /v/hard 2>&1 || echo hardlink-refused; "
        "ln /v/real /tmp/out 2>&1 || echo hardlink-out-refused; "
        "umount /v 2>&1 || echo umount-refused; "
        "mknod /v/dev c 1 3 2>&1 || echo mknod-refused'",
    )
    assert code == 0, out
    refusals = ("hardlink-refused", "hardlink-out-refused", "umount-refused", "mknod-refused")
    for refused in refusals:
        assert refused in out, out
    async with lifecycle.content(volume.token) as client:
        base = f"/volumecontent/{volume.volume_id}"

        async def status(method: str, kind: str, path: str, **kw: object) -> int:
            params = {"path": path, **kw.pop("params", {})}  # type: ignore[dict-item]
            response = await client.request(method, f"{base}/{kind}", params=params, **kw)
            return response.status_code

        # reading through a symlink, or walking one, is refused; `..` never resolves
        for path in ("/shadow", "/root/etc/passwd", "/up/etc/passwd", "/../x", "/root"):
            assert await status("GET", "file", path) == 400, path
        assert await status("GET", "file", "/fifo") == 400  # and does not hang
        # writing over a symlink replaces the link, never what it points to
        assert await status("PUT", "file", "/shadow", content=b"x") == 201
        assert await status("PUT", "file", "/root/etc/evil", content=b"x") == 400
        assert await status("POST", "dir", "/root/newdir") == 400
        assert await status("DELETE", "path", "/root/etc") == 400
        assert await status("PATCH", "path", "/root/etc", json={"mode": 0o777}) == 400
        # the link itself can be seen and removed
        listed = (await client.get(f"{base}/dir", params={"path": "/"})).json()
        kinds = {entry["name"]: (entry["type"], entry.get("target")) for entry in listed}
        assert kinds["root"] == ("symlink", "/")
        assert kinds["real"] == ("file", None)
        assert await status("DELETE", "path", "/root") == 204
        read = await client.get(f"{base}/file", params={"path": "/real"})
        assert read.content == b"secret\n"
    assert Path("/etc/shadow").read_bytes() != b"x"
    code, out = await run_command(
        sandbox,
        "cat /v/shadow; echo; test -L /v/shadow || echo replaced; sudo grep -c root: /etc/shadow",
    )
    assert out.split() == ["x", "replaced", "1"], "the write replaced the link, not its target"


async def test_a_paused_sandbox_keeps_its_volume(lifecycle: Volumes) -> None:
    await lifecycle.volumes.CreateVolume(pb.CreateVolumeRequest(tenant=A, name="v"))
    sandbox = await lifecycle.create(A, ("v", "/v"))
    await run_command(sandbox, "echo kept > /v/file")
    await lifecycle.sandboxes.PauseSandbox(
        pb.PauseSandboxRequest(sandbox_id=sandbox.sandbox_id, tenant=A, memory=False)
    )
    resumed = await lifecycle.sandboxes.ResumeSandbox(
        pb.ResumeSandboxRequest(sandbox_id=sandbox.sandbox_id, tenant=A)
    )
    # a filesystem pause ended every process, and with them the mount namespace: the volume
    # is mounted again into the new one
    code, out = await run_command(resumed.sandbox, "cat /v/file; stat -c %U /v/file")
    assert (code, out.split()) == (0, ["kept", "user"])


async def test_volumes_and_their_mounts_survive_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"

    @contextlib.asynccontextmanager
    async def lifecycle(kill_on_exit: bool) -> AsyncIterator[Volumes]:
        settings = make_settings(state, volume_mb=64, kill_on_exit=kill_on_exit)
        async with (
            serving(settings) as running,
            grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
        ):
            yield Volumes(
                running, pb_grpc.SandboxServiceStub(channel), pb_grpc.VolumeServiceStub(channel)
            )

    async with lifecycle(kill_on_exit=False) as first:
        volume = await first.volume(A, "v")
        sandbox = await first.create(A, ("v", "/v"))
        await run_command(sandbox, "echo before > /v/file")
        # if the supervisor is our child, it is reaped below once the next service kills it
        supervisor = first.backend.live[sandbox.sandbox_id].process._popen
    # the sandbox lives on; the service's own mount of the volume is gone until it is back
    async with lifecycle(kill_on_exit=True) as second:
        listed = await second.volumes.ListVolumes(pb.ListVolumesRequest(tenant=A))
        assert [v.token for v in listed.volumes] == [volume.token]
        got = await second.sandboxes.GetSandbox(
            pb.GetSandboxRequest(sandbox_id=sandbox.sandbox_id, tenant=A)
        )
        assert [(m.name, m.path) for m in got.sandbox.volume_mounts] == [("v", "/v")]
        await run_command(sandbox, "echo after >> /v/file")
        async with second.content(volume.token) as client:
            read = await client.get(
                f"/volumecontent/{volume.volume_id}/file", params={"path": "file"}
            )
            # one filesystem: what the surviving sandbox wrote after the restart is there
            assert read.content == b"before\nafter\n"
        delete = pb.DeleteVolumeRequest(tenant=A, volume_id=volume.volume_id)
        assert await _code(second.volumes.DeleteVolume(delete)) == (
            grpc.StatusCode.FAILED_PRECONDITION
        )
    if supervisor is not None:
        supervisor.wait(timeout=10)
    _assert_no_leak(state)
    async with lifecycle(kill_on_exit=True) as third:
        # the sandbox was killed with the second service: the volume is free
        await third.volumes.DeleteVolume(delete)


async def test_a_tenant_keeps_at_most_its_share_of_volumes(tmp_path: Path) -> None:
    # each may fill --volume-mb: uncapped, one tenant takes the disk and every volume slot
    settings = make_settings(tmp_path / "state", volume_mb=64, max_volumes_per_tenant=2)
    async with (
        serving(settings) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        stub = pb_grpc.VolumeServiceStub(channel)
        made = [
            (await stub.CreateVolume(pb.CreateVolumeRequest(tenant=A, name=n))).volume
            for n in ("one", "two")
        ]
        third = stub.CreateVolume(pb.CreateVolumeRequest(tenant=A, name="three"))
        assert await _code(third) == grpc.StatusCode.RESOURCE_EXHAUSTED
        await stub.CreateVolume(pb.CreateVolumeRequest(tenant=B, name="one"))  # its own share
        await stub.DeleteVolume(pb.DeleteVolumeRequest(tenant=A, volume_id=made[0].volume_id))
        await stub.CreateVolume(pb.CreateVolumeRequest(tenant=A, name="three"))
    _assert_no_leak(tmp_path / "state")
