"""gRPC servicers for SandboxService and TemplateService over a `Backend`.

Handlers only translate: protobuf in, a backend call, protobuf out (`messages`). The RPCs
that are nothing more are rows (`handling.OneCall`); the others are methods.

The tenant rules live in `handling`, for every servicer and both backends (with `tenancy`,
the lookup that hides another tenant's sandbox, which both backends' indexes are read
through): an empty tenant means every tenant and needs `x-agentcube-e2b-scope: all-tenants`
(`unary`); calls that act for one tenant (creating, changing or pausing a sandbox, writing
templates, builds, snapshots, volumes: `one_tenant`) refuse it whatever the scope.
WatchSandboxes has no tenant: it always covers every tenant, so it always needs the scope.
Create's Idempotency-Key is handled here too (`idempotency`), so every backend honours it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2_grpc as pb_grpc
from extproc.core import timeouts
from extproc.core.errors import DomainError, InvalidArgument
from extproc.lifecycle.backend import Backend
from extproc.lifecycle.handling import (
    Handler,
    OneCall,
    abort,
    one_tenant,
    optional,
    require_all_tenants,
    unary,
)
from extproc.lifecycle.idempotency import IdempotentCreates
from extproc.lifecycle.messages import each, enum_number, metric_pb, sandbox_pb, template_pb
from extproc.lifecycle.metric_history import check_window
from extproc.lifecycle.sandboxes import (
    CreateSpec,
    ListQuery,
    OnTimeout,
    PauseMode,
    Sandbox,
    State,
    VolumeMount,
)
from extproc.lifecycle.templates import Template

_rpc = OneCall[Backend]()


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


def _template_of(t: pb.Template) -> Template:
    """A template as CreateTemplate asks for it; an unset CPU count or memory is 2 or 512 MiB."""
    return Template(
        template_id=t.template_id, aliases=tuple(t.aliases), public=t.public,
        cpu_count=t.cpu_count or 2, memory_mb=t.memory_mb or 512,
        disk_size_mb=t.disk_size_mb, ports=tuple(t.ports),
    )  # fmt: skip


def _changing(
    method: Callable[[Backend], Callable[[str, str, Any], Awaitable[Sandbox]]],
    argument: Callable[[Any], Any],
    response: Callable[..., Any],
) -> Handler[Any]:
    """The handler of an RPC that changes one sandbox of one tenant: `method` of the backend
    with the request's id, tenant and `argument`, answered as `response(sandbox=...)`."""
    return _rpc.answer(one_tenant, lambda b, r: method(b)(r.sandbox_id, r.tenant, argument(r)),
        response, sandbox=sandbox_pb)  # fmt: skip


class SandboxServicer(pb_grpc.SandboxServiceServicer):  # type: ignore[misc]
    def __init__(self, backend: Backend, max_timeout_s: int) -> None:
        self._backend = backend
        self._creates = IdempotentCreates(backend)
        self._max_timeout_s = max_timeout_s

    @one_tenant
    async def CreateSandbox(self, request: Any, context: Any) -> pb.CreateSandboxResponse:
        timeout_s = timeouts.create_timeout(
            optional(request, "timeout_seconds"), self._max_timeout_s
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
        return pb.CreateSandboxResponse(sandbox=sandbox_pb(await self._creates.create(spec)))

    @unary
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

    # The RPCs that are one backend call and its answer, one row each (`OneCall`).
    GetSandbox = _rpc.answer(unary, lambda b, r: b.get(r.sandbox_id, r.tenant),
        pb.GetSandboxResponse, sandbox=sandbox_pb)  # fmt: skip
    KillSandbox = _rpc.answer(unary, lambda b, r: b.kill(r.sandbox_id, r.tenant),
        pb.KillSandboxResponse)  # fmt: skip
    # The RPCs that change one sandbox and answer it: (the backend's method, what it is
    # given besides the id and the tenant, the reply), one row each.
    SetSandboxTimeout = _changing(lambda b: b.set_timeout, lambda r: r.timeout_seconds,
                                  pb.SetSandboxTimeoutResponse)  # fmt: skip
    RefreshSandbox = _changing(lambda b: b.refresh, lambda r: optional(r, "duration_seconds"),
                               pb.RefreshSandboxResponse)  # fmt: skip
    PauseSandbox = _changing(lambda b: b.pause, lambda r: _pause_mode(r, "memory"),
                             pb.PauseSandboxResponse)  # fmt: skip
    ResumeSandbox = _changing(lambda b: b.resume, lambda r: optional(r, "timeout_seconds"),
                              pb.ResumeSandboxResponse)  # fmt: skip

    @one_tenant
    async def ConnectSandbox(self, request: Any, context: Any) -> pb.ConnectSandboxResponse:
        sandbox, resumed = await self._backend.connect(
            request.sandbox_id, request.tenant, optional(request, "timeout_seconds")
        )
        return pb.ConnectSandboxResponse(sandbox=sandbox_pb(sandbox), resumed=resumed)

    @unary
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
            require_all_tenants(context)
            async for event in self._backend.watch():
                yield pb.WatchSandboxesResponse(
                    type=enum_number(event.type),
                    sandbox=sandbox_pb(event.sandbox) if event.sandbox else None,
                    revision=event.revision,
                )
        except DomainError as exc:
            await abort(context, exc)


class TemplateServicer(pb_grpc.TemplateServiceServicer):  # type: ignore[misc]
    """Every RPC is one backend call and its answer: one row each (`OneCall`)."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    ListTemplates = _rpc.answer(unary, lambda b, r: b.list_templates(r.tenant),
        pb.ListTemplatesResponse, templates=each(template_pb))  # fmt: skip
    GetTemplate = _rpc.answer(unary, lambda b, r: b.get_template(r.template_id, r.tenant),
        pb.GetTemplateResponse, template=template_pb)  # fmt: skip
    CreateTemplate = _rpc.answer(one_tenant,
        lambda b, r: b.create_template(r.tenant, _template_of(r.template)),
        pb.CreateTemplateResponse, template=template_pb)  # fmt: skip
    UpdateTemplate = _rpc.answer(one_tenant,
        lambda b, r: b.update_template(r.tenant, r.template_id, r.public),
        pb.UpdateTemplateResponse, template=template_pb)  # fmt: skip
    DeleteTemplate = _rpc.answer(one_tenant,
        lambda b, r: b.delete_template(r.tenant, r.template_id),
        pb.DeleteTemplateResponse)  # fmt: skip
