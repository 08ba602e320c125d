"""Template builds in build sandboxes: what a hostile step can and cannot reach, and
templates surviving a restart of the lifecycle service."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import grpc
import pytest

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2_grpc as pb_grpc
from extproc.lifecycle import building
from extproc.lifecycle.server import serving

from .conftest import make_settings
from .helpers import run_command

TENANT = "t"


async def _started(
    channel: grpc.aio.Channel, name: str, steps: list[pb.TemplateBuildStep], tenant: str = TENANT
) -> tuple[str, str]:
    """A build of `name` from base with `steps`, started; (its template id, its build id)."""
    builds = pb_grpc.TemplateBuildServiceStub(channel)
    asked = await builds.RequestTemplateBuild(
        pb.RequestTemplateBuildRequest(tenant=tenant, name=name)
    )
    template_id = asked.template.template_id
    await builds.StartTemplateBuild(pb.StartTemplateBuildRequest(
        tenant=tenant, template_id=template_id, build_id=asked.build_id,
        spec=pb.TemplateBuildSpec(from_image="e2bdev/base", steps=steps)))  # fmt: skip
    return template_id, asked.build_id


async def _status(
    channel: grpc.aio.Channel, started: tuple[str, str], tenant: str = TENANT, offset: int = 0
) -> pb.GetTemplateBuildStatusResponse:
    template_id, build_id = started
    return await pb_grpc.TemplateBuildServiceStub(channel).GetTemplateBuildStatus(
        pb.GetTemplateBuildStatusRequest(
            tenant=tenant, template_id=template_id, build_id=build_id, logs_offset=offset
        )
    )


async def _ended(
    channel: grpc.aio.Channel, started: tuple[str, str], tenant: str = TENANT
) -> tuple[pb.TemplateBuild, list[str]]:
    """The started build once it has ended, and its log lines."""
    lines: list[str] = []
    for _ in range(600):
        status = await _status(channel, started, tenant, offset=len(lines))
        lines += [e.message for e in status.log_entries]
        ended = status.build.status in (pb.BUILD_STATUS_READY, pb.BUILD_STATUS_ERROR)
        if ended and not status.log_entries:
            return status.build, lines
        await asyncio.sleep(0.1)
    raise AssertionError(f"build {started} did not end: {lines}")


async def _build(
    channel: grpc.aio.Channel, name: str, steps: list[pb.TemplateBuildStep]
) -> tuple[pb.TemplateBuild, list[str]]:
    """Build `name` from base with `steps`; (the finished build, its log lines)."""
    return await _ended(channel, await _started(channel, name, steps))


def _root(command: str) -> pb.TemplateBuildStep:
    return pb.TemplateBuildStep(type="RUN", args=[command, "root"])


async def test_a_step_cannot_make_the_host_read_or_write_its_files(tmp_path: Path) -> None:
    secret = tmp_path / "host-secret"
    marker = secrets.token_hex(16)
    secret.write_text(marker)
    async with (
        serving(make_settings(tmp_path / "state")) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        # The build's own files (its log and exit status) swapped for links to the host's.
        swapped, lines = await _build(
            channel,
            "swapped",
            [
                _root(
                    f"rm -f /.agentcube-build/log /.agentcube-build/status; "
                    f"ln -s {secret} /.agentcube-build/log; ln -s {secret} /.agentcube-build/status"
                )
            ],
        )
        assert swapped.status == pb.BUILD_STATUS_ERROR
        assert not any(marker in line for line in lines), lines
        # A layer whose /var/log leads to the host's /etc builds, but never starts.
        built, _ = await _build(
            channel, "redirected", [_root("rm -rf /var/log && ln -s /etc /var/log")]
        )
        assert built.status == pb.BUILD_STATUS_READY
        sandboxes = pb_grpc.SandboxServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await sandboxes.CreateSandbox(
                pb.CreateSandboxRequest(tenant=TENANT, template_id="redirected")
            )
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "/var/log is a symlink" in (refused.value.details() or "")
        assert not Path("/etc/agentcube-e2b.log").exists()
        assert secret.read_text() == marker


async def test_templates_and_their_builds_survive_a_restart(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    async with (
        serving(settings) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        build, _ = await _build(channel, "kept", [
            pb.TemplateBuildStep(type="ENV", args=["KEPT", "yes"]),
            pb.TemplateBuildStep(type="RUN", args=["echo $KEPT > kept.txt"]),
        ])  # fmt: skip
        assert build.status == pb.BUILD_STATUS_READY
    async with (
        serving(settings) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        sandboxes = pb_grpc.SandboxServiceStub(channel)
        sandbox = (await sandboxes.CreateSandbox(pb.CreateSandboxRequest(
            tenant=TENANT, template_id="kept:default"))).sandbox  # fmt: skip
        assert await run_command(sandbox, "cat /home/user/kept.txt; echo $KEPT") == (
            0,
            "yes\nyes\n",
        )
        await sandboxes.KillSandbox(
            pb.KillSandboxRequest(tenant=TENANT, sandbox_id=sandbox.sandbox_id)
        )
        templates = pb_grpc.TemplateServiceStub(channel)
        kept = (
            await templates.GetTemplate(pb.GetTemplateRequest(tenant=TENANT, template_id="kept"))
        ).template
        assert [b.build_id for b in kept.builds] == [build.build_id]
        await templates.DeleteTemplate(pb.DeleteTemplateRequest(tenant=TENANT, template_id="kept"))
        assert list((tmp_path / "state" / "layers").iterdir()) == []


async def test_templates_and_snapshots_past_the_tenants_share_are_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    settings = make_settings(state, max_templates_per_tenant=1)
    async with (
        serving(settings) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        sandboxes = pb_grpc.SandboxServiceStub(channel)
        snapshots = pb_grpc.SnapshotServiceStub(channel)
        builds = pb_grpc.TemplateBuildServiceStub(channel)
        sandbox = (await sandboxes.CreateSandbox(pb.CreateSandboxRequest(tenant=TENANT))).sandbox
        snapshot = pb.CreateSnapshotRequest(tenant=TENANT, sandbox_id=sandbox.sandbox_id)
        await snapshots.CreateSnapshot(snapshot)
        layers = sorted((state / "layers").iterdir())
        for refused in (
            snapshots.CreateSnapshot(snapshot),
            builds.RequestTemplateBuild(pb.RequestTemplateBuildRequest(tenant=TENANT, name="t")),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await refused
            assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "at most 1 templates and snapshots" in (error.value.details() or "")
        assert sorted((state / "layers").iterdir()) == layers  # refused before any copy
        # another tenant has a share of its own
        await builds.RequestTemplateBuild(pb.RequestTemplateBuildRequest(tenant="u", name="t"))
        await sandboxes.KillSandbox(
            pb.KillSandboxRequest(tenant=TENANT, sandbox_id=sandbox.sandbox_id)
        )


def _run(command: str) -> pb.TemplateBuildStep:
    return pb.TemplateBuildStep(type="RUN", args=[command])


async def test_a_tenant_holds_one_build_slot_so_another_tenants_build_runs(
    tmp_path: Path,
) -> None:
    # two slots on the gateway: a tenant's builds that never end must not hold both
    async with (
        serving(make_settings(tmp_path / "state")) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        hogs = [await _started(channel, f"hog-{n}", [_run("sleep 600")]) for n in (1, 2)]
        quick = await _started(channel, "quick", [_run("true")], tenant="u")
        other, _ = await _ended(channel, quick, tenant="u")
        assert other.status == pb.BUILD_STATUS_READY
        # the tenant's second build waits for its first, not for the gateway
        statuses = [(await _status(channel, hog)).build.status for hog in hogs]
        assert statuses == [pb.BUILD_STATUS_BUILDING, pb.BUILD_STATUS_BUILDING]
        second_log = [e.message for e in (await _status(channel, hogs[1])).log_entries]
        assert not any("sleep 600" in line for line in second_log), second_log


async def test_a_build_ends_at_its_time_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(building, "BUILD_TIMEOUT_S", 1.0)
    async with (
        serving(make_settings(tmp_path / "state")) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        build, lines = await _build(channel, "long", [_run("sleep 0.5; echo one"),
                                                      _run("sleep 30; echo two")])  # fmt: skip
        assert build.status == pb.BUILD_STATUS_ERROR
        assert "did not finish within" in build.reason or "ran past" in build.reason, build.reason
        assert not any(line == "two" for line in lines)
