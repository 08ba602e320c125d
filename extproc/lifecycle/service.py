"""gRPC servicers for SandboxService and TemplateService over a `Backend`.

Handlers only translate: protobuf in, a backend call, protobuf out. Every domain error
becomes a status through the one table in `status`.

The backends read an empty tenant as "every tenant" (the edge's routing directory needs
that), so the servicers refuse one with INVALID_ARGUMENT unless the call carries
`x-agentcube-e2b-scope: all-tenants` (`caller_auth`). WatchSandboxes has no tenant: it always
covers every tenant, so it always needs the scope.
"""

from __future__ import annotations

import errno
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp  # type: ignore[import-untyped]

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2_grpc as pb_grpc
from extproc.core import timeouts
from extproc.core.errors import DomainError, InvalidArgument, ResourceExhausted
from extproc.lifecycle.backend import Backend
from extproc.lifecycle.caller_auth import may_see_all_tenants
from extproc.lifecycle.metric_history import check_window
from extproc.lifecycle.sandboxes import (
    CreateSpec,
    ListQuery,
    Metric,
    OnTimeout,
    PauseMode,
    Sandbox,
    State,
    VolumeMount,
)  # fmt: skip
from extproc.lifecycle.status import to_status
from extproc.lifecycle.templates import Build, Template

log = logging.getLogger(__name__)
R = TypeVar("R")


def _enum(value: int) -> Any:
    # Our IntEnums share the proto's numbers; the stubs type enum fields by their proto
    # enum class, which an int is at run time.
    return int(value)


def _ts(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def sandbox_pb(s: Sandbox) -> pb.Sandbox:
    return pb.Sandbox(
        sandbox_id=s.sandbox_id, template_id=s.template_id, alias=s.alias, tenant=s.tenant,
        metadata=s.metadata, env_vars=s.env_vars, started_at=_ts(s.started_at),
        end_at=_ts(s.end_at), state=_enum(s.state), cpu_count=s.cpu_count,
        memory_mb=s.memory_mb, disk_size_mb=s.disk_size_mb, envd_version=s.envd_version,
        envd_access_token=s.envd_access_token, endpoint_host=s.endpoint_host,
        on_timeout=_enum(s.on_timeout), auto_resume=s.auto_resume, secure=s.secure,
        allow_internet_access=s.allow_internet_access, end_reason=s.end_reason,
        allow_public_traffic=s.allow_public_traffic,
        traffic_access_token=s.traffic_access_token,
        pause_mode=_enum(s.pause_mode if s.state is State.PAUSED else 0),
        volume_mounts=[pb.VolumeMount(name=m.name, path=m.path) for m in s.volume_mounts],
    )  # fmt: skip


# templates.py's build statuses and kinds -> the proto's enums.
BUILD_STATUS = {"waiting": pb.BUILD_STATUS_WAITING, "building": pb.BUILD_STATUS_BUILDING,
                "ready": pb.BUILD_STATUS_READY, "error": pb.BUILD_STATUS_ERROR}  # fmt: skip
_KINDS = {"template": pb.TEMPLATE_KIND_TEMPLATE, "snapshot": pb.TEMPLATE_KIND_SNAPSHOT}


def build_pb(b: Build) -> pb.TemplateBuild:
    return pb.TemplateBuild(
        build_id=b.build_id, status=BUILD_STATUS[b.status], created_at=_ts(b.created_at),
        finished_at=_ts(b.finished_at) if b.finished_at else None, tags=list(b.tags),
        cpu_count=b.cpu_count, memory_mb=b.memory_mb, reason=b.reason,
        reason_step=b.reason_step,
    )  # fmt: skip


def template_pb(t: Template) -> pb.Template:
    return pb.Template(
        template_id=t.template_id, aliases=list(t.aliases), tenant=t.tenant, public=t.public,
        cpu_count=t.cpu_count, memory_mb=t.memory_mb, disk_size_mb=t.disk_size_mb,
        envd_version=t.envd_version, created_at=_ts(t.created_at),
        updated_at=_ts(t.updated_at), ports=list(t.ports), build_id=t.build_id,
        build_status=BUILD_STATUS[t.build_status], builds=[build_pb(b) for b in t.builds],
        kind=_KINDS[t.kind], source_sandbox_id=t.source_sandbox_id,
    )  # fmt: skip


def metric_pb(m: Metric) -> pb.SandboxMetric:
    return pb.SandboxMetric(
        timestamp=_ts(m.timestamp), cpu_count=m.cpu_count, cpu_used_pct=m.cpu_used_pct,
        mem_used=m.mem_used, mem_total=m.mem_total, mem_cache=m.mem_cache,
        disk_used=m.disk_used, disk_total=m.disk_total,
    )  # fmt: skip


def _domain(exc: BaseException) -> BaseException:
    """A full disk anywhere below the state directory is the operator's to fix, not our bug."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return ResourceExhausted(
            f"no space left on device ({exc.filename or 'state directory'}); free space and retry"
        )
    return exc


async def _abort(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException) -> None:
    if (domain := _domain(exc)) is not exc:
        log.warning("lifecycle RPC failed: %s", exc)
        exc = domain
    code, message = to_status(exc)
    if not isinstance(exc, DomainError):
        log.exception("unexpected error in a lifecycle RPC", exc_info=exc)
    await context.abort(code, message)


def _unary(
    handler: Callable[[Any, Any, Any], Awaitable[R]],
) -> Callable[[Any, Any, Any], Awaitable[R]]:
    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: Any) -> R:
        try:
            if not request.tenant:
                _require_all_tenants(context)
            return await handler(self, request, context)
        except (DomainError, Exception) as exc:
            await _abort(context, exc)
            raise  # abort raises; this line is for type checkers

    return wrapper


def _require_all_tenants(context: Any) -> None:
    if not may_see_all_tenants(context):
        raise InvalidArgument(
            "tenant is required: only a caller that sends x-agentcube-e2b-scope: all-tenants "
            "may leave it empty to cover every tenant"
        )


def _optional(request: Any, name: str) -> int | None:
    return int(getattr(request, name)) if request.HasField(name) else None


def _on_timeout(value: int) -> OnTimeout:
    if value == pb.TIMEOUT_ACTION_PAUSE:
        return OnTimeout.PAUSE
    if value in (pb.TIMEOUT_ACTION_UNSPECIFIED, pb.TIMEOUT_ACTION_KILL):
        return OnTimeout.KILL
    raise InvalidArgument(f"unknown on_timeout value {value}")


def _pause_mode(request: Any, keeps_memory: str) -> PauseMode:
    """The `keeps_memory` bool field (absent: true, E2B's default) as a pause mode."""
    if not request.HasField(keeps_memory) or getattr(request, keeps_memory):
        return PauseMode.FULL
    return PauseMode.FILESYSTEM


def _timeout_pause_mode(request: Any) -> PauseMode:
    mode = _pause_mode(request, "auto_pause_memory")
    # As E2B's API: traffic cannot wake a sandbox that lost its processes transparently.
    if mode is PauseMode.FILESYSTEM and request.auto_resume:
        raise InvalidArgument(
            "autoResume cannot be combined with autoPauseMemory: false: a sandbox paused "
            "to its filesystem must be resumed explicitly (connect or resume)"
        )
    return mode


def _public_traffic(request: Any) -> bool:
    if not request.HasField("allow_public_traffic") or request.allow_public_traffic:
        return True
    # As E2B's API: the traffic token is only handed out with a secured sandbox.
    if not request.secure:
        raise InvalidArgument("allowPublicTraffic: false requires a secure sandbox")
    return False


def _states(values: Any) -> frozenset[State]:
    if not values:
        return frozenset({State.RUNNING, State.PAUSED})
    try:
        return frozenset(State(v) for v in values)
    except ValueError as exc:
        raise InvalidArgument(f"unknown sandbox state in {list(values)}") from exc


class SandboxServicer(pb_grpc.SandboxServiceServicer):  # type: ignore[misc]
    def __init__(self, backend: Backend, max_timeout_s: int) -> None:
        self._backend = backend
        self._max_timeout_s = max_timeout_s

    @_unary
    async def CreateSandbox(self, request: Any, context: Any) -> pb.CreateSandboxResponse:
        timeout_s = timeouts.create_timeout(
            _optional(request, "timeout_seconds"), self._max_timeout_s
        )
        spec = CreateSpec(
            tenant=request.tenant, template=request.template_id or "base", timeout_s=timeout_s,
            timeout_requested=request.HasField("timeout_seconds"),
            metadata=dict(request.metadata), env_vars=dict(request.env_vars),
            on_timeout=_on_timeout(request.on_timeout), auto_resume=request.auto_resume,
            secure=request.secure, allow_internet_access=request.allow_internet_access,
            idempotency_key=request.idempotency_key,
            allow_public_traffic=_public_traffic(request),
            timeout_pause_mode=_timeout_pause_mode(request),
            max_sandboxes=request.quota.max_sandboxes,
            creates_per_minute=request.quota.creates_per_minute,
            volume_mounts=tuple(VolumeMount(m.name, m.path) for m in request.volume_mounts),
        )  # fmt: skip
        return pb.CreateSandboxResponse(sandbox=sandbox_pb(await self._backend.create(spec)))

    @_unary
    async def GetSandbox(self, request: Any, context: Any) -> pb.GetSandboxResponse:
        sandbox = await self._backend.get(request.sandbox_id, request.tenant)
        return pb.GetSandboxResponse(sandbox=sandbox_pb(sandbox))

    @_unary
    async def ListSandboxes(self, request: Any, context: Any) -> pb.ListSandboxesResponse:
        after, before = (
            getattr(request, name).ToNanoseconds() / 1e9 if request.HasField(name) else None
            for name in ("started_after", "started_before")
        )
        if request.order not in (pb.LIST_ORDER_UNSPECIFIED, pb.LIST_ORDER_DESC,
                                 pb.LIST_ORDER_ASC):  # fmt: skip
            raise InvalidArgument(f"unknown list order {request.order}")
        query = ListQuery(
            tenant=request.tenant, states=_states(request.states), template=request.template_id,
            metadata=dict(request.metadata), started_after=after, started_before=before,
            page_size=request.page_size, page_token=request.page_token,
            ascending=request.order == pb.LIST_ORDER_ASC,
        )  # fmt: skip
        page = await self._backend.list_sandboxes(query)
        return pb.ListSandboxesResponse(
            sandboxes=[sandbox_pb(s) for s in page.sandboxes],
            next_page_token=page.next_page_token, total_running=page.total_running,
        )

    @_unary
    async def KillSandbox(self, request: Any, context: Any) -> pb.KillSandboxResponse:
        await self._backend.kill(request.sandbox_id, request.tenant)
        return pb.KillSandboxResponse()

    @_unary
    async def SetSandboxTimeout(self, request: Any, context: Any) -> pb.SetSandboxTimeoutResponse:
        sandbox = await self._backend.set_timeout(
            request.sandbox_id, request.tenant, request.timeout_seconds
        )
        return pb.SetSandboxTimeoutResponse(sandbox=sandbox_pb(sandbox))

    @_unary
    async def RefreshSandbox(self, request: Any, context: Any) -> pb.RefreshSandboxResponse:
        sandbox = await self._backend.refresh(
            request.sandbox_id, request.tenant, _optional(request, "duration_seconds")
        )
        return pb.RefreshSandboxResponse(sandbox=sandbox_pb(sandbox))

    @_unary
    async def ConnectSandbox(self, request: Any, context: Any) -> pb.ConnectSandboxResponse:
        sandbox, resumed = await self._backend.connect(
            request.sandbox_id, request.tenant, _optional(request, "timeout_seconds")
        )
        return pb.ConnectSandboxResponse(sandbox=sandbox_pb(sandbox), resumed=resumed)

    @_unary
    async def PauseSandbox(self, request: Any, context: Any) -> pb.PauseSandboxResponse:
        sandbox = await self._backend.pause(
            request.sandbox_id, request.tenant, _pause_mode(request, "memory")
        )
        return pb.PauseSandboxResponse(sandbox=sandbox_pb(sandbox))

    @_unary
    async def ResumeSandbox(self, request: Any, context: Any) -> pb.ResumeSandboxResponse:
        sandbox = await self._backend.resume(
            request.sandbox_id, request.tenant, _optional(request, "timeout_seconds")
        )
        return pb.ResumeSandboxResponse(sandbox=sandbox_pb(sandbox))

    @_unary
    async def GetSandboxMetrics(self, request: Any, context: Any) -> pb.GetSandboxMetricsResponse:
        start, end = (
            getattr(request, name).seconds if request.HasField(name) else None
            for name in ("start", "end")
        )
        try:
            check_window(start, end)
        except InvalidArgument:
            # An unknown sandbox is 404 whatever the window, as E2B looks it up first.
            await self._backend.get(request.sandbox_id, request.tenant)
            raise
        metrics = await self._backend.metrics(request.sandbox_id, request.tenant, start, end)
        return pb.GetSandboxMetricsResponse(metrics=[metric_pb(m) for m in metrics])

    async def WatchSandboxes(
        self, request: Any, context: Any
    ) -> AsyncIterator[pb.WatchSandboxesResponse]:
        try:
            _require_all_tenants(context)
            async for event in self._backend.watch():
                yield pb.WatchSandboxesResponse(
                    type=_enum(event.type),
                    sandbox=sandbox_pb(event.sandbox) if event.sandbox else None,
                    revision=event.revision,
                )
        except DomainError as exc:
            await _abort(context, exc)


class TemplateServicer(pb_grpc.TemplateServiceServicer):  # type: ignore[misc]
    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    @_unary
    async def ListTemplates(self, request: Any, context: Any) -> pb.ListTemplatesResponse:
        templates = await self._backend.list_templates(request.tenant)
        return pb.ListTemplatesResponse(templates=[template_pb(t) for t in templates])

    @_unary
    async def GetTemplate(self, request: Any, context: Any) -> pb.GetTemplateResponse:
        template = await self._backend.get_template(request.template_id, request.tenant)
        return pb.GetTemplateResponse(template=template_pb(template))

    @_unary
    async def CreateTemplate(self, request: Any, context: Any) -> pb.CreateTemplateResponse:
        t = request.template
        template = Template(
            template_id=t.template_id, aliases=tuple(t.aliases), public=t.public,
            cpu_count=t.cpu_count or 2, memory_mb=t.memory_mb or 512,
            disk_size_mb=t.disk_size_mb, ports=tuple(t.ports),
        )  # fmt: skip
        created = await self._backend.create_template(request.tenant, template)
        return pb.CreateTemplateResponse(template=template_pb(created))

    @_unary
    async def UpdateTemplate(self, request: Any, context: Any) -> pb.UpdateTemplateResponse:
        template = await self._backend.update_template(
            request.tenant, request.template_id, request.public
        )
        return pb.UpdateTemplateResponse(template=template_pb(template))

    @_unary
    async def DeleteTemplate(self, request: Any, context: Any) -> pb.DeleteTemplateResponse:
        await self._backend.delete_template(request.tenant, request.template_id)
        return pb.DeleteTemplateResponse()
