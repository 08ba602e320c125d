"""The platform API's templates, builds, tags and snapshots: one function per operation.

As `sandbox_api`: the tenant comes from ext_authz, every handler is one lifecycle call, the
statuses are E2B's exactly (202 for a build request and start, 201 for an upload link, a
tag assignment, a snapshot and a fork), failures go through rest_wire's table.

Upload links: lifecycle signs the path and query; the host is the one the client asked
(`:authority` and, since Envoy strips the port from it, the listener's port, which Envoy
sends as the `destination.port` attribute), so the SDK's PUT comes back through this
gateway, where Envoy streams it to the lifecycle's upload server (envoy_config/routes.py).
"""

from __future__ import annotations

from typing import Any

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc.core.errors import InvalidArgument, NotFound
from extproc.edge import rest_json, rest_requests, template_requests
from extproc.edge.platform_operation import Call, PlatformContext, PlatformRequest
from extproc.edge.rest_wire import (
    FROM_GRPC,
    HTTP_STATUS,
    Answer,
    json_answer,
    no_content,
)  # fmt: skip

_STATUS = {pb.BUILD_STATUS_WAITING: "waiting", pb.BUILD_STATUS_BUILDING: "building",
           pb.BUILD_STATUS_READY: "ready", pb.BUILD_STATUS_ERROR: "error"}  # fmt: skip
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _ms(ts: Any) -> float:
    return float(ts.seconds * 1000 + ts.nanos // 1_000_000)


def log_entry_json(entry: pb.BuildLogEntry) -> dict[str, Any]:
    """E2B `BuildLogEntry`."""
    body = {"timestamp": rest_json.rfc3339(entry.timestamp), "level": entry.level or "info",
            "message": entry.message}  # fmt: skip
    if entry.step:
        body["step"] = entry.step
    return body


def build_info_json(template_id: str, build: pb.TemplateBuild,
                    entries: list[pb.BuildLogEntry]) -> dict[str, Any]:  # fmt: skip
    """E2B `TemplateBuildInfo` (build status)."""
    body: dict[str, Any] = {
        "templateID": template_id, "buildID": build.build_id,
        "status": _STATUS.get(build.status, "error"), "logs": [],
        "logEntries": [log_entry_json(e) for e in entries],
    }  # fmt: skip
    if build.status == pb.BUILD_STATUS_ERROR:
        reason: dict[str, Any] = {"message": build.reason or "the build failed", "logEntries": []}
        if build.reason_step:
            reason["step"] = build.reason_step
        body["reason"] = reason
    return body


def snapshot_json(snapshot: pb.Template) -> dict[str, Any]:
    """E2B `SnapshotInfo`: the id is the name (else the template id) with its tag."""
    name = snapshot.aliases[0] if snapshot.aliases else snapshot.template_id
    return {"snapshotID": f"{name}:default",
            "names": [f"{alias}:default" for alias in snapshot.aliases]}  # fmt: skip


def _grpc_status(code: int) -> int:
    """A google.rpc.Code as E2B's HTTP status (fork errors), through rest_wire's tables."""
    kind = next((k for c, k in FROM_GRPC.items() if c.value[0] == code), None)
    return HTTP_STATUS.get(kind, 500) if kind is not None else 500


def origin(headers: dict[str, str], listener_port: int) -> str:
    """The scheme, host and port the client reached this gateway at."""
    scheme = headers.get("x-forwarded-proto") or headers.get(":scheme") or "http"
    host = headers.get(":authority") or headers.get("host") or ""
    if not host or any(c in host for c in "/?#@ "):
        raise InvalidArgument("the request has no usable Host for an upload link")
    if listener_port and listener_port != _DEFAULT_PORTS.get(scheme):
        host = f"{host}:{listener_port}"
    return f"{scheme}://{host}"


async def list_templates(context: PlatformContext, request: PlatformRequest, call: Call) -> Answer:
    rest_requests.check_template_query(request.query)  # v2's `limit`; one page is all
    reply = await context.templates.ListTemplates(
        pb.ListTemplatesRequest(tenant=request.tenant), timeout=call.operation.deadline_s
    )
    return json_answer(200, [rest_json.template_json(t) for t in reply.templates])


async def get_template(context: PlatformContext, request: PlatformRequest, call: Call) -> Answer:
    rest_requests.check_template_query(request.query)
    template = await _template(context, request, call)
    return json_answer(200, rest_json.template_with_builds_json(template))


async def _template(context: PlatformContext, request: PlatformRequest, call: Call) -> pb.Template:
    reply = await context.templates.GetTemplate(
        pb.GetTemplateRequest(template_id=call.resource_id, tenant=request.tenant),
        timeout=call.operation.deadline_s,
    )
    template: pb.Template = reply.template
    return template


# -- builds -------------------------------------------------------------------------------


async def request_build(context: PlatformContext, request: PlatformRequest, call: Call) -> Answer:
    body = rest_requests.json_object(request.body)
    reply = await context.builds.RequestTemplateBuild(
        template_requests.build_request(body, request.tenant), timeout=call.operation.deadline_s
    )
    names = list(reply.template.aliases)
    return json_answer(202, {
        "templateID": reply.template.template_id, "buildID": reply.build_id,
        "public": reply.template.public, "names": names, "aliases": names,
        "tags": list(reply.tags),
    })  # fmt: skip


async def upload_link(context: PlatformContext, request: PlatformRequest, call: Call) -> Answer:
    template_id, files_hash = call.ids
    reply = await context.builds.GetTemplateFileUpload(
        pb.GetTemplateFileUploadRequest(
            tenant=request.tenant, template_id=template_id, files_hash=files_hash
        ),
        timeout=call.operation.deadline_s,
    )
    url = origin(request.headers, request.listener_port) + reply.upload_path
    return json_answer(201, {"present": reply.present, "url": url})


async def start_build(context: PlatformContext, request: PlatformRequest, call: Call) -> Answer:
    template_id, build_id = call.ids
    body = rest_requests.json_object(request.body)
    start = template_requests.start_request(body, request.tenant, template_id, build_id)
    await context.builds.StartTemplateBuild(start, timeout=call.operation.deadline_s)
    return json_answer(202, {})


async def _status(context: PlatformContext, request: PlatformRequest, call: Call, query: str,
                  ) -> pb.GetTemplateBuildStatusResponse:  # fmt: skip
    template_id, build_id = call.ids
    status = template_requests.status_request(query, request.tenant, template_id, build_id)
    reply: pb.GetTemplateBuildStatusResponse = await context.builds.GetTemplateBuildStatus(
        status, timeout=call.operation.deadline_s
    )
    return reply


async def build_status(context: PlatformContext, request: PlatformRequest, call: Call) -> Answer:
    reply = await _status(context, request, call, request.query)
    return json_answer(200, build_info_json(call.ids[0], reply.build, list(reply.log_entries)))


async def build_logs(context: PlatformContext, request: PlatformRequest, call: Call) -> Answer:
    """E2B `TemplateBuildLogsResponse`: entries from a unix-ms cursor, either way."""
    cursor, limit, backward, level = template_requests.logs_query(request.query)
    entries: list[pb.BuildLogEntry] = []
    offset = 0
    while True:  # the lifecycle pages at 100; a build's log is read whole, then cut
        reply = await _status(context, request, call, f"logsOffset={offset}&level={level}")
        entries.extend(reply.log_entries)
        if len(reply.log_entries) < template_requests.MAX_STATUS_LIMIT:
            break
        offset += len(reply.log_entries)
    if backward:
        chosen = [e for e in reversed(entries) if not cursor or _ms(e.timestamp) <= cursor]
    else:
        chosen = [e for e in entries if _ms(e.timestamp) >= cursor]
    return json_answer(200, {"logs": [log_entry_json(e) for e in chosen[:limit]]})


# -- templates by name --------------------------------------------------------------------


async def alias(context: PlatformContext, request: PlatformRequest, call: Call) -> Answer:
    """`Template.exists`: 200 for the tenant's own or a shared name, else 404 (never
    E2B's 403 "exists, not yours": another tenant's names are not to be learnt)."""
    template = await _template(context, request, call)
    if template.tenant and template.tenant != request.tenant:
        raise NotFound(f"template {call.resource_id[:80]!r} not found")
    return json_answer(200, {"templateID": template.template_id, "public": template.public})


async def delete(context: PlatformContext, request: PlatformRequest, call: Call) -> Answer:
    await context.templates.DeleteTemplate(
        pb.DeleteTemplateRequest(tenant=request.tenant, template_id=call.resource_id),
        timeout=call.operation.deadline_s,
    )
    return no_content()


async def update(context: PlatformContext, request: PlatformRequest, call: Call) -> Answer:
    body = rest_requests.json_object(request.body)
    reply = await context.templates.UpdateTemplate(
        pb.UpdateTemplateRequest(tenant=request.tenant, template_id=call.resource_id,
                                 public=template_requests.public_flag(body)),
        timeout=call.operation.deadline_s,
    )  # fmt: skip
    return json_answer(200, {"names": list(reply.template.aliases)})


async def assign_tags(context: PlatformContext, request: PlatformRequest, call: Call) -> Answer:
    target, tags = template_requests.tags_body(rest_requests.json_object(request.body),
                                               "target")  # fmt: skip
    reply = await context.builds.AssignTemplateTags(
        pb.AssignTemplateTagsRequest(tenant=request.tenant, target=target, tags=tags),
        timeout=call.operation.deadline_s,
    )
    return json_answer(201, {"tags": list(reply.tags), "buildID": reply.build_id})


async def remove_tags(context: PlatformContext, request: PlatformRequest, call: Call) -> Answer:
    name, tags = template_requests.tags_body(rest_requests.json_object(request.body), "name")
    await context.builds.RemoveTemplateTags(
        pb.RemoveTemplateTagsRequest(tenant=request.tenant, name=name, tags=tags),
        timeout=call.operation.deadline_s,
    )
    return no_content()


async def tags(context: PlatformContext, request: PlatformRequest, call: Call) -> Answer:
    template = await _template(context, request, call)
    if template.tenant != request.tenant:
        raise NotFound(f"template {call.resource_id[:80]!r} not found")
    listed = [
        {"tag": tag, "buildID": b.build_id, "createdAt": rest_json.rfc3339(b.created_at)}
        for b in template.builds
        for tag in b.tags
    ]
    return json_answer(200, listed)


# -- snapshots ----------------------------------------------------------------------------


async def create_snapshot(context: PlatformContext, request: PlatformRequest, call: Call,
                          ) -> Answer:  # fmt: skip
    name = template_requests.snapshot_name(rest_requests.json_object(request.body))
    reply = await context.snapshots.CreateSnapshot(
        pb.CreateSnapshotRequest(tenant=request.tenant, sandbox_id=call.resource_id, name=name),
        timeout=call.operation.deadline_s,
    )
    return json_answer(201, snapshot_json(reply.snapshot))


async def list_snapshots(context: PlatformContext, request: PlatformRequest, call: Call) -> Answer:
    listing, limit, offset = template_requests.snapshots_query(request.query, request.tenant)
    reply = await context.snapshots.ListSnapshots(listing, timeout=call.operation.deadline_s)
    page = list(reply.snapshots)[offset : offset + limit]
    headers: tuple[tuple[str, str], ...] = ()
    if offset + limit < len(reply.snapshots):
        headers = (("x-next-token", str(offset + limit)),)
    return json_answer(200, [snapshot_json(s) for s in page], headers)


async def fork(context: PlatformContext, request: PlatformRequest, call: Call) -> Answer:
    body = rest_requests.json_object(request.body)
    fork = template_requests.fork_request(body, request.tenant, call.resource_id)
    reply = await context.snapshots.ForkSandbox(fork, timeout=call.operation.deadline_s)
    results: list[dict[str, Any]] = []
    for result in reply.results:
        if result.HasField("sandbox"):
            context.learn(result.sandbox)
            results.append({"sandbox": rest_json.sandbox_json(result.sandbox, context.domain)})
        else:
            status = _grpc_status(result.error.code)
            results.append({"error": {"code": status, "message": result.error.message}})
    return json_answer(201, results)
