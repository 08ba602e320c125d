"""An in-memory lifecycle service implementing the proto, for driving the edge in-process.

It enforces tenants like the real one (another tenant's sandbox is NOT_FOUND), pages with
opaque tokens, and streams WatchSandboxes from a queue the test controls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2_grpc as pb_grpc


def make_sandbox(sandbox_id: str, tenant: str = "default", **fields: Any) -> pb.Sandbox:
    now = int(time.time())
    started = fields.pop("started", now)
    sandbox = pb.Sandbox(
        sandbox_id=sandbox_id,
        template_id=fields.pop("template_id", "base"),
        tenant=tenant,
        state=fields.pop("state", pb.SANDBOX_STATE_RUNNING),
        endpoint_host=fields.pop("endpoint_host", "127.0.0.7"),
        envd_access_token=fields.pop("envd_access_token", "tok-" + sandbox_id),
        secure=fields.pop("secure", True),
        envd_version="0.6.13",
        cpu_count=2,
        memory_mb=512,
        disk_size_mb=1024,
        **fields,
    )
    sandbox.started_at.seconds = started
    if not sandbox.HasField("end_at"):
        sandbox.end_at.seconds = now + 300
    return sandbox


class FakeLifecycle(pb_grpc.SandboxServiceServicer, pb_grpc.TemplateServiceServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self.sandboxes: dict[str, pb.Sandbox] = {}
        self.calls: list[tuple[str, Any]] = []
        self.events: asyncio.Queue[pb.WatchSandboxesResponse | grpc.StatusCode] = asyncio.Queue()
        self.watchers = 0
        self.fail_next: grpc.StatusCode | None = None
        # ResumeSandbox sets `resume_entered`, then waits for `resume_gate` when there is one.
        self.resume_entered = asyncio.Event()
        self.resume_gate: asyncio.Event | None = None
        # When set, PauseSandbox sends its watch event and waits for `paused_seen()` before
        # replying, as the real lifecycle publishes before it replies.
        self.publish_pause: Callable[[], bool] | None = None
        self.revision = 1  # the snapshot's; `publish` counts on from it
        self.next_id = 0
        self.templates = {
            "base": pb.Template(
                template_id="base",
                aliases=["base"],
                cpu_count=2,
                memory_mb=512,
                disk_size_mb=1024,
                envd_version="0.6.13",
                public=True,
            ),
        }
        self.templates["base"].created_at.seconds = 1_700_000_000

    def add(self, sandbox: pb.Sandbox) -> pb.Sandbox:
        self.sandboxes[sandbox.sandbox_id] = sandbox
        return sandbox

    async def _enter(self, name: str, request: Any, context: grpc.aio.ServicerContext) -> None:
        self.calls.append((name, request))
        if self.fail_next is not None:
            code, self.fail_next = self.fail_next, None
            await context.abort(code, f"injected {code.name}")

    async def _own(
        self, sandbox_id: str, tenant: str, context: grpc.aio.ServicerContext
    ) -> pb.Sandbox:
        sandbox = self.sandboxes.get(sandbox_id)
        if sandbox is None or (tenant and sandbox.tenant != tenant):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"sandbox {sandbox_id} not found")
        assert sandbox is not None
        return sandbox

    async def CreateSandbox(self, request: pb.CreateSandboxRequest, context: Any) -> Any:
        await self._enter("CreateSandbox", request, context)
        if request.template_id not in self.templates:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"template {request.template_id} not found"
            )
        self.next_id += 1
        sandbox = make_sandbox(
            f"sbx{self.next_id:04d}",
            request.tenant,
            template_id=request.template_id,
            secure=request.secure,
            metadata=dict(request.metadata),
        )
        if not request.secure:
            sandbox.envd_access_token = ""
        if request.HasField("allow_public_traffic"):
            sandbox.allow_public_traffic = request.allow_public_traffic
            if not request.allow_public_traffic:
                sandbox.traffic_access_token = "traffic-" + sandbox.sandbox_id
        sandbox.end_at.seconds = sandbox.started_at.seconds + request.timeout_seconds
        self.add(sandbox)
        return pb.CreateSandboxResponse(sandbox=sandbox)

    async def GetSandbox(self, request: pb.GetSandboxRequest, context: Any) -> Any:
        await self._enter("GetSandbox", request, context)
        return pb.GetSandboxResponse(
            sandbox=await self._own(request.sandbox_id, request.tenant, context)
        )

    async def ListSandboxes(self, request: pb.ListSandboxesRequest, context: Any) -> Any:
        await self._enter("ListSandboxes", request, context)
        states = set(request.states) or {pb.SANDBOX_STATE_RUNNING, pb.SANDBOX_STATE_PAUSED}
        found = [
            s
            for s in sorted(self.sandboxes.values(), key=lambda s: s.sandbox_id)
            if s.tenant == request.tenant
            and s.state in states
            and all(s.metadata.get(k) == v for k, v in request.metadata.items())
        ]
        start = int(request.page_token or 0)
        size = request.page_size or 100
        page = found[start : start + size]
        more = start + size < len(found)
        return pb.ListSandboxesResponse(
            sandboxes=page,
            next_page_token=str(start + size) if more else "",
            total_running=len(found),
        )

    async def KillSandbox(self, request: pb.KillSandboxRequest, context: Any) -> Any:
        await self._enter("KillSandbox", request, context)
        await self._own(request.sandbox_id, request.tenant, context)
        del self.sandboxes[request.sandbox_id]
        return pb.KillSandboxResponse()

    async def SetSandboxTimeout(self, request: pb.SetSandboxTimeoutRequest, context: Any) -> Any:
        await self._enter("SetSandboxTimeout", request, context)
        sandbox = await self._own(request.sandbox_id, request.tenant, context)
        return pb.SetSandboxTimeoutResponse(sandbox=sandbox)

    async def RefreshSandbox(self, request: pb.RefreshSandboxRequest, context: Any) -> Any:
        await self._enter("RefreshSandbox", request, context)
        return pb.RefreshSandboxResponse(
            sandbox=await self._own(request.sandbox_id, request.tenant, context)
        )

    async def ConnectSandbox(self, request: pb.ConnectSandboxRequest, context: Any) -> Any:
        await self._enter("ConnectSandbox", request, context)
        sandbox = await self._own(request.sandbox_id, request.tenant, context)
        resumed = sandbox.state == pb.SANDBOX_STATE_PAUSED
        sandbox.state = pb.SANDBOX_STATE_RUNNING
        return pb.ConnectSandboxResponse(sandbox=sandbox, resumed=resumed)

    async def PauseSandbox(self, request: pb.PauseSandboxRequest, context: Any) -> Any:
        await self._enter("PauseSandbox", request, context)
        sandbox = await self._own(request.sandbox_id, request.tenant, context)
        if sandbox.state == pb.SANDBOX_STATE_PAUSED:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "sandbox is already paused")
        sandbox.state = pb.SANDBOX_STATE_PAUSED
        if self.publish_pause is not None:
            await self.publish(pb.SANDBOX_EVENT_TYPE_UPDATED, sandbox)
            while not self.publish_pause():
                await asyncio.sleep(0)
        return pb.PauseSandboxResponse(sandbox=sandbox)

    async def publish(self, event_type: int, sandbox: pb.Sandbox) -> None:
        """Send a change down the watch stream with the next revision."""
        self.revision += 1
        event = pb.WatchSandboxesResponse(type=event_type, sandbox=sandbox, revision=self.revision)
        await self.events.put(event)

    async def ResumeSandbox(self, request: pb.ResumeSandboxRequest, context: Any) -> Any:
        await self._enter("ResumeSandbox", request, context)
        self.resume_entered.set()
        if self.resume_gate is not None:
            await self.resume_gate.wait()
        sandbox = await self._own(request.sandbox_id, request.tenant, context)
        if sandbox.state != pb.SANDBOX_STATE_PAUSED:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "sandbox is not paused")
        sandbox.state = pb.SANDBOX_STATE_RUNNING
        return pb.ResumeSandboxResponse(sandbox=sandbox)

    async def GetSandboxMetrics(self, request: pb.GetSandboxMetricsRequest, context: Any) -> Any:
        await self._enter("GetSandboxMetrics", request, context)
        await self._own(request.sandbox_id, request.tenant, context)
        metric = pb.SandboxMetric(
            cpu_count=2,
            cpu_used_pct=12.5,
            mem_used=1,
            mem_total=2,
            mem_cache=3,
            disk_used=4,
            disk_total=5,
        )
        metric.timestamp.seconds = 1_700_000_000
        return pb.GetSandboxMetricsResponse(metrics=[metric])

    async def WatchSandboxes(
        self, request: pb.WatchSandboxesRequest, context: Any
    ) -> AsyncIterator[pb.WatchSandboxesResponse]:
        self.watchers += 1
        revision = 1
        for sandbox in list(self.sandboxes.values()):
            yield pb.WatchSandboxesResponse(
                type=pb.SANDBOX_EVENT_TYPE_EXISTING, sandbox=sandbox, revision=revision
            )
        yield pb.WatchSandboxesResponse(type=pb.SANDBOX_EVENT_TYPE_SYNCED, revision=revision)
        while True:
            event = await self.events.get()
            if isinstance(event, grpc.StatusCode):
                await context.abort(event, "injected stream failure")
            yield event

    async def ListTemplates(self, request: pb.ListTemplatesRequest, context: Any) -> Any:
        await self._enter("ListTemplates", request, context)
        return pb.ListTemplatesResponse(templates=list(self.templates.values()))

    async def GetTemplate(self, request: pb.GetTemplateRequest, context: Any) -> Any:
        await self._enter("GetTemplate", request, context)
        template = self.templates.get(request.template_id)
        if template is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "template not found")
        return pb.GetTemplateResponse(template=template)


async def start_fake(fake: FakeLifecycle) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    pb_grpc.add_SandboxServiceServicer_to_server(fake, server)
    pb_grpc.add_TemplateServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"
