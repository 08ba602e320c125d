"""The platform API's sandbox operations: one function per operation, each one lifecycle call.

Success statuses are E2B's exactly (201 create/resume, 204 kill/timeout/refresh/pause, 200 or
201 connect) because the SDK accepts nothing else. The namespace's `maxSandboxes` and
`createsPerMinute` travel on CreateSandbox: the lifecycle service enforces those, where the
count of sandboxes is exact.

State changes are visible at once: a kill, pause, resume, connect, timeout or refresh that
succeeds is applied to this edge's sandbox directory from lifecycle's reply before the answer
goes out (`learn`, `forget`), so the SDK's very next request sees it, e.g. "not found" for a
sandbox just paused rather than a request hanging on its stopped daemon. The watch event that
follows carries the same state and changes nothing. A change is answered once this edge's own
watch stream has shown it too (`settling`, watching.py), so that the sibling edge processes,
fed by the same fan-out, most likely know it as well when the next request reaches one of
them (watching.py says how likely). A create is learnt the same way, so a request for the new
sandbox (a signed URL, which names no sandbox, included) finds it without a fallback read.
"""

from __future__ import annotations

from typing import Any

import grpc

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc.core.errors import Conflict
from extproc.core.request_context import note_request
from extproc.edge import rest_json, rest_requests
from extproc.edge.platform_operation import Call, PlatformContext, PlatformRequest
from extproc.edge.rest_wire import Answer, json_answer, no_content


async def create(context: PlatformContext, request: PlatformRequest, call: Call) -> Answer:
    create = rest_requests.create_request(
        rest_requests.json_object(request.body),
        request.tenant,
        v2=call.operation.v2,
        idempotency_key=request.headers.get("idempotency-key"),
    )
    quota = context.quotas().for_namespace(request.tenant)
    create.quota.max_sandboxes = quota.max_sandboxes
    create.quota.creates_per_minute = quota.creates_per_minute
    reply = await context.sandboxes.CreateSandbox(create, timeout=call.operation.deadline_s)
    note_request(sandbox_id=reply.sandbox.sandbox_id)
    context.learn(reply.sandbox)
    return json_answer(201, rest_json.sandbox_json(reply.sandbox, context.domain))


async def list_v1(context: PlatformContext, request: PlatformRequest, call: Call) -> Answer:
    list_request = rest_requests.list_request(request.query, request.tenant, v2=False)
    listed: list[dict[str, Any]] = []
    while True:
        reply = await context.sandboxes.ListSandboxes(
            list_request, timeout=call.operation.deadline_s
        )
        listed.extend(rest_json.listed_sandbox_json(s) for s in reply.sandboxes)
        if not reply.next_page_token:
            return json_answer(200, listed)
        list_request.page_token = reply.next_page_token


async def list_v2(context: PlatformContext, request: PlatformRequest, call: Call) -> Answer:
    list_request = rest_requests.list_request(request.query, request.tenant, v2=True)
    reply = await context.sandboxes.ListSandboxes(list_request, timeout=call.operation.deadline_s)
    headers: tuple[tuple[str, str], ...] = (("x-total-running", str(reply.total_running)),)
    if reply.next_page_token:
        # Absent on the last page: the SDK's has_next is bool(token).
        headers += (("x-next-token", reply.next_page_token),)
    body = [rest_json.listed_sandbox_json(s) for s in reply.sandboxes]
    return json_answer(200, body, headers)


async def get(context: PlatformContext, request: PlatformRequest, call: Call) -> Answer:
    reply = await context.sandboxes.GetSandbox(
        pb.GetSandboxRequest(sandbox_id=call.resource_id, tenant=request.tenant),
        timeout=call.operation.deadline_s,
    )
    return json_answer(200, rest_json.sandbox_detail_json(reply.sandbox, context.domain))


async def kill(context: PlatformContext, request: PlatformRequest, call: Call) -> Answer:
    sandbox_id = call.resource_id
    with context.settling(sandbox_id) as settling:
        await context.sandboxes.KillSandbox(
            pb.KillSandboxRequest(sandbox_id=sandbox_id, tenant=request.tenant),
            timeout=call.operation.deadline_s,
        )
        context.forget(sandbox_id)
        await settling.until_shows(None)
    return no_content()


async def set_timeout(context: PlatformContext, request: PlatformRequest, call: Call) -> Answer:
    body = rest_requests.json_object(request.body)
    set_timeout = rest_requests.set_timeout_request(body, call.resource_id, request.tenant)
    await context.change(call, context.sandboxes.SetSandboxTimeout, set_timeout)
    return no_content()


async def refresh(context: PlatformContext, request: PlatformRequest, call: Call) -> Answer:
    body = rest_requests.json_object(request.body)
    refresh = rest_requests.refresh_request(body, call.resource_id, request.tenant)
    await context.change(call, context.sandboxes.RefreshSandbox, refresh)
    return no_content()


async def connect(context: PlatformContext, request: PlatformRequest, call: Call) -> Answer:
    body = rest_requests.json_object(request.body)
    v2 = call.operation.v2
    connect = rest_requests.connect_request(body, call.resource_id, request.tenant, v2)
    reply = await context.change(call, context.sandboxes.ConnectSandbox, connect)
    status = 201 if reply.resumed else 200
    return json_answer(status, rest_json.sandbox_json(reply.sandbox, context.domain))


async def pause(context: PlatformContext, request: PlatformRequest, call: Call) -> Answer:
    body = rest_requests.json_object(request.body)
    pause = rest_requests.pause_request(body, call.resource_id, request.tenant)
    try:
        await context.change(call, context.sandboxes.PauseSandbox, pause)
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.FAILED_PRECONDITION:
            # The SDK reads 409 as "already paused" and returns False.
            raise Conflict(error.details() or "sandbox is already paused") from error
        raise
    return no_content()


async def resume(context: PlatformContext, request: PlatformRequest, call: Call) -> Answer:
    body = rest_requests.json_object(request.body)
    resume = rest_requests.resume_request(body, call.resource_id, request.tenant)
    reply = await context.change(call, context.sandboxes.ResumeSandbox, resume)
    return json_answer(201, rest_json.sandbox_json(reply.sandbox, context.domain))


async def metrics(context: PlatformContext, request: PlatformRequest, call: Call) -> Answer:
    metrics = rest_requests.metrics_request(request.query, call.resource_id, request.tenant)
    reply = await context.sandboxes.GetSandboxMetrics(metrics, timeout=call.operation.deadline_s)
    return json_answer(200, [rest_json.metric_json(m) for m in reply.metrics])
