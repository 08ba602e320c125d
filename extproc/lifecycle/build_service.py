"""gRPC servicers for TemplateBuildService and SnapshotService over a `Backend`.

As in `service`: protobuf in, one backend call, protobuf out; the RPCs that are nothing more
are rows (`handling.OneCall`). Domain errors become statuses through `status` (`handling`).
A fork's per-sandbox failures are answers, not errors: each carries the status code that a
Create failing the same way would have had.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2_grpc as pb_grpc
from extproc.core import timeouts
from extproc.core.errors import InvalidArgument
from extproc.lifecycle.backend import Backend
from extproc.lifecycle.build_steps import BuildSpec, Step
from extproc.lifecycle.handling import OneCall, one_tenant, optional
from extproc.lifecycle.messages import build_pb, each, sandbox_pb, template_pb, timestamp
from extproc.lifecycle.status import to_status

LEVELS = ("", "debug", "info", "warn", "error")
MAX_LOG_ENTRIES = 100
# E2B's SandboxForkRequest.timeout default, seconds.
FORK_TIMEOUT_S = 15


def spec_of(message: pb.TemplateBuildSpec) -> BuildSpec:
    return BuildSpec(
        from_image=message.from_image, from_template=message.from_template,
        registry=message.registry_type, force=message.force,
        steps=tuple(Step(s.type, tuple(s.args), s.files_hash, s.force) for s in message.steps),
        start_cmd=message.start_cmd, ready_cmd=message.ready_cmd,
    )  # fmt: skip


def _tags(tags: Sequence[str]) -> list[str]:
    if not tags:
        raise InvalidArgument("tags must not be empty")
    return list(tags)


_rpc = OneCall[Backend]()


class TemplateBuildServicer(pb_grpc.TemplateBuildServiceServicer):  # type: ignore[misc]
    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    @one_tenant
    async def RequestTemplateBuild(
        self, request: Any, context: Any
    ) -> pb.RequestTemplateBuildResponse:
        template, build = await self._backend.request_build(
            request.tenant, request.name, list(request.tags), request.cpu_count,
            request.memory_mb,
        )  # fmt: skip
        return pb.RequestTemplateBuildResponse(
            template=template_pb(template), build_id=build.build_id, tags=list(build.tags)
        )

    @one_tenant
    async def GetTemplateFileUpload(
        self, request: Any, context: Any
    ) -> pb.GetTemplateFileUploadResponse:
        present, path = await self._backend.file_upload(
            request.tenant, request.template_id, request.files_hash
        )
        return pb.GetTemplateFileUploadResponse(present=present, upload_path=path)

    StartTemplateBuild = _rpc.answer(one_tenant,
        lambda b, r: b.start_build(r.tenant, r.template_id, r.build_id, spec_of(r.spec)),
        pb.StartTemplateBuildResponse)  # fmt: skip

    @one_tenant
    async def GetTemplateBuildStatus(
        self, request: Any, context: Any
    ) -> pb.GetTemplateBuildStatusResponse:
        if request.level not in LEVELS:
            raise InvalidArgument(f"level must be one of {', '.join(LEVELS[1:])}")
        limit = min(request.limit or MAX_LOG_ENTRIES, MAX_LOG_ENTRIES)
        build, entries = await self._backend.build_status(
            request.tenant, request.template_id, request.build_id, request.logs_offset, limit,
            request.level,
        )  # fmt: skip
        return pb.GetTemplateBuildStatusResponse(
            build=build_pb(build),
            log_entries=[
                pb.BuildLogEntry(
                    timestamp=timestamp(e.timestamp), level=e.level, message=e.message, step=e.step
                )
                for e in entries
            ],
        )

    @one_tenant
    async def AssignTemplateTags(self, request: Any, context: Any) -> pb.AssignTemplateTagsResponse:
        tags = _tags(request.tags)
        build = await self._backend.assign_tags(request.tenant, request.target, tags)
        return pb.AssignTemplateTagsResponse(build_id=build.build_id, tags=tags)

    RemoveTemplateTags = _rpc.answer(one_tenant,
        lambda b, r: b.remove_tags(r.tenant, r.name, _tags(r.tags)),
        pb.RemoveTemplateTagsResponse)  # fmt: skip


class SnapshotServicer(pb_grpc.SnapshotServiceServicer):  # type: ignore[misc]
    def __init__(self, backend: Backend, max_timeout_s: int) -> None:
        self._backend = backend
        self._max_timeout_s = max_timeout_s

    CreateSnapshot = _rpc.answer(one_tenant,
        lambda b, r: b.create_snapshot(r.tenant, r.sandbox_id, r.name),
        pb.CreateSnapshotResponse, snapshot=template_pb)  # fmt: skip
    ListSnapshots = _rpc.answer(one_tenant,
        lambda b, r: b.list_snapshots(r.tenant, r.sandbox_id, r.name),
        pb.ListSnapshotsResponse, snapshots=each(template_pb))  # fmt: skip

    @one_tenant
    async def ForkSandbox(self, request: Any, context: Any) -> pb.ForkSandboxResponse:
        asked = optional(request, "timeout_seconds")
        timeout_s = timeouts.create_timeout(
            FORK_TIMEOUT_S if asked is None else asked, self._max_timeout_s
        )
        outcomes = await self._backend.fork(
            request.tenant, request.sandbox_id, request.count or 1, timeout_s
        )
        results = []
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                code, message = to_status(outcome)
                error = pb.ForkError(code=code.value[0], message=message)
                results.append(pb.ForkResult(error=error))
            else:
                results.append(pb.ForkResult(sandbox=sandbox_pb(outcome)))
        return pb.ForkSandboxResponse(results=results)
