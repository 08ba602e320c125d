"""Volumes with the official Python SDK through `up`: `Volume.*`, `volume_mounts` at create,
and the volume content API (served by the lifecycle service, routed by Envoy)."""

from __future__ import annotations

import uuid

import httpx
import pytest
from e2b import Sandbox, SandboxException, Volume
from e2b.exceptions import VolumeException, VolumeNotFoundException, VolumePathNotFoundException

from support.gateway import Gateway
from support.processes import wait_until


def _name() -> str:
    return f"vol-{uuid.uuid4().hex[:12]}"


def test_a_volume_written_by_one_sandbox_is_read_by_another_then_deleted(
    gateway: Gateway,
) -> None:
    volume = Volume.create(_name())
    assert volume.token and volume.token.startswith("vol_")
    writer = Sandbox.create(timeout=120, volume_mounts={"/mnt/data": volume})
    reader: Sandbox | None = None
    try:
        writer.files.write("/mnt/data/notes/hello.txt", "hello from the writer")
        ran = writer.commands.run("echo from-a-command > /mnt/data/cmd.txt && id -un")
        assert ran.stdout.strip() == "user"
        # mounted by name, elsewhere, in a sandbox with another block of host ids
        reader = Sandbox.create(timeout=120, volume_mounts={"/home/user/shared": volume.name})
        assert reader.files.read("/home/user/shared/notes/hello.txt") == "hello from the writer"
        owners = reader.commands.run("stat -c '%U:%G' /home/user/shared/cmd.txt /home/user/shared")
        assert owners.stdout.split() == ["user:user", "user:user"]
        info = reader.get_info()
        assert info.volume_mounts == [{"name": volume.name, "path": "/home/user/shared"}]

        # the content API sees the same files, and what it writes the sandboxes see
        assert volume.read_file("/cmd.txt") == "from-a-command\n"
        names = {entry.name for entry in volume.list("/", depth=2)}
        assert {"notes", "hello.txt", "cmd.txt"} <= names
        written = volume.write_file("/from-api.txt", b"\x00binary\xff")
        assert (written.uid, written.gid, written.type.value) == (1000, 1000, "file")
        stat = reader.commands.run("stat -c '%s %U' /home/user/shared/from-api.txt")
        assert stat.stdout.split() == ["8", "user"]
        volume.make_dir("/a/b/c", force=True)
        assert volume.exists("/a/b/c") and not volume.exists("/nope")
        with pytest.raises(VolumePathNotFoundException):
            volume.read_file("/nope")

        # mounted by a live sandbox: deleting is refused
        with pytest.raises(VolumeException, match="409"):
            Volume.destroy(volume.volume_id)
    finally:
        writer.kill()
        if reader is not None:
            reader.kill()
    assert Volume.destroy(volume.volume_id) is True
    assert Volume.destroy(volume.volume_id) is False
    assert volume.volume_id not in {v.volume_id for v in Volume.list()}
    with pytest.raises(VolumeNotFoundException):
        Volume.get_info(volume.volume_id)


def test_another_tenant_can_neither_see_nor_use_a_volume(gateway: Gateway) -> None:
    volume = Volume.create(_name())
    other_key = gateway.create_key(namespace="volumes-other-team")
    volumes_of_other = f"{gateway.url}/volumes"
    wait_until(  # the key index reloads within 250 ms of the key file's change
        lambda: httpx.get(volumes_of_other, headers={"x-api-key": other_key}).status_code == 200,
        5,
    )
    try:
        assert volume.volume_id not in {v.volume_id for v in Volume.list(api_key=other_key)}
        with pytest.raises(VolumeNotFoundException):
            Volume.get_info(volume.volume_id, api_key=other_key)
        assert Volume.destroy(volume.volume_id, api_key=other_key) is False  # a 404
        with pytest.raises(SandboxException, match="404"):
            Sandbox.create(volume_mounts={"/data": volume.name}, api_key=other_key)
        # their own volume's token opens nothing of ours: 404 as for a missing volume
        theirs = Volume.create(volume.name, api_key=other_key)  # names are per tenant
        answer = httpx.get(
            f"{gateway.url}/volumecontent/{volume.volume_id}/path",
            params={"path": "/"},
            headers={"Authorization": f"Bearer {theirs.token}"},
        )
        assert (answer.status_code, answer.json()["code"]) == (404, 404)
        Volume.destroy(theirs.volume_id, api_key=other_key)
        assert Volume.get_info(volume.volume_id).name == volume.name  # untouched
    finally:
        Volume.destroy(volume.volume_id)


def test_bad_input_gets_the_platform_error_shape(gateway: Gateway) -> None:
    with pytest.raises(VolumeException, match="400"):
        Volume.create("not a valid name")
    volume = Volume.create(_name())
    try:
        with pytest.raises(VolumeException, match="409"):
            Volume.create(volume.name)
        for path, status in (("relative", 400), ("/", 400), ("/proc/x", 400), ("/opt", 400)):
            with pytest.raises(SandboxException, match=str(status)):
                Sandbox.create(volume_mounts={path: volume})
        with pytest.raises(SandboxException, match="404"):
            Sandbox.create(volume_mounts={"/data": "no-such-volume"})
        content = f"{gateway.url}/volumecontent/{volume.volume_id}/file"
        for headers in ({}, {"Authorization": "Bearer not-a-volume-token"}):
            answer = httpx.get(content, params={"path": "/x"}, headers=headers)
            assert answer.status_code == 401
            assert set(answer.json()) == {"code", "message"}
        bearer = {"Authorization": f"Bearer {volume.token}"}
        for params in ({"path": "/../etc/passwd"}, {}):
            answer = httpx.get(content, params=params, headers=bearer)
            assert (answer.status_code, answer.json()["code"]) == (400, 400)
    finally:
        Volume.destroy(volume.volume_id)
