"""The platform API's template builds, tags and snapshots: one method per operation.

As `platform`: the tenant comes from ext_authz, every handler is one lifecycle call, the
statuses are E2B's exactly (202 for a build request and start, 201 for an upload link, a
tag assignment, a snapshot and a fork), failures go through rest_wire's table.

Upload links: lifecycle signs the path and query; the host is the one the client asked
(`:authority` and, since Envoy strips the port from it, the listener's port, which Envoy
sends as the `destination.port` attribute), so the SDK's PUT comes back through this
gateway, where Envoy streams it to the lifecycle's upload server (envoy_config/routes.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2_grpc as pb_grpc
from extproc.core.errors import InvalidArgument, NotFound
from extproc.edge import rest_json, rest_requests, template_requests
from extproc.edge.rest_routes import Operation
from extproc.edge.rest_wire import (
    FROM_GRPC,
    HTTP_STATUS,
    Answer,
    json_answer,
    no_content,
)  # fmt: skip

_STATUS = {pb.BUILD_STATUS_WAITING: "waiting", pb.BUILD_STATUS_BUILDING: "building",
           pb.BUILD_STATUS_READY: "ready", pb.BUILD_STATUS_ERROR: "error"}  # fmt: skip
_CALL_S = 30.0
# A fork waits for its sandboxes to start, as a create does.
_FORK_S = 120.0
_DEFAULT_PORTS = {"http": 80, "https": 443}

Handler = Callable[[Any, Operation], Awaitable[Answer]]


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


class TemplateApi:
    def __init__(self, channel: grpc.aio.Channel, learn: Callable[[pb.Sandbox], None],
                 domain: str) -> None:  # fmt: skip
        self._builds = pb_grpc.TemplateBuildServiceStub(channel)
        self._snapshots = pb_grpc.SnapshotServiceStub(channel)
        self._templates = pb_grpc.TemplateServiceStub(channel)
        self._learn = learn
        self._domain = domain

    def handlers(self) -> dict[str, Handler]:
        return {
            "build_template": self.request_build,
            "template_files": self.upload_link,
            "start_template_build": self.start_build,
            "template_build_status": self.build_status,
            "template_build_logs": self.build_logs,
            "template_alias": self.alias,
            "delete_template": self.delete,
            "update_template": self.update,
            "update_template_v2": self.update,
            "tag_template": self.assign_tags,
            "untag_template": self.remove_tags,
            "template_tags": self.tags,
            "create_snapshot": self.create_snapshot,
            "list_snapshots": self.list_snapshots,
            "fork": self.fork,
        }

    async def _template(self, tenant: str, name: str) -> pb.Template:
        reply = await self._templates.GetTemplate(
            pb.GetTemplateRequest(template_id=name, tenant=tenant), timeout=_CALL_S
        )
        template: pb.Template = reply.template
        return template

    # -- builds ---------------------------------------------------------------------------

    async def request_build(self, request: Any, _: Operation) -> Answer:
        body = rest_requests.json_object(request.body)
        reply = await self._builds.RequestTemplateBuild(
            template_requests.build_request(body, request.tenant), timeout=_CALL_S
        )
        names = list(reply.template.aliases)
        return json_answer(202, {
            "templateID": reply.template.template_id, "buildID": reply.build_id,
            "public": reply.template.public, "names": names, "aliases": names,
            "tags": list(reply.tags),
        })  # fmt: skip

    async def upload_link(self, request: Any, route: Operation) -> Answer:
        template_id, files_hash = route.ids
        reply = await self._builds.GetTemplateFileUpload(
            pb.GetTemplateFileUploadRequest(
                tenant=request.tenant, template_id=template_id, files_hash=files_hash
            ),
            timeout=_CALL_S,
        )
        url = origin(request.headers, request.listener_port) + reply.upload_path
        return json_answer(201, {"present": reply.present, "url": url})

    async def start_build(self, request: Any, route: Operation) -> Answer:
        template_id, build_id = route.ids
        body = rest_requests.json_object(request.body)
        start = template_requests.start_request(body, request.tenant, template_id, build_id)
        await self._builds.StartTemplateBuild(start, timeout=_CALL_S)
        return json_answer(202, {})

    async def _status(self, request: Any, route: Operation, query: str,
                      ) -> pb.GetTemplateBuildStatusResponse:  # fmt: skip
        template_id, build_id = route.ids
        status = template_requests.status_request(query, request.tenant, template_id, build_id)
        reply: pb.GetTemplateBuildStatusResponse = await self._builds.GetTemplateBuildStatus(
            status, timeout=_CALL_S
        )
        return reply

    async def build_status(self, request: Any, route: Operation) -> Answer:
        reply = await self._status(request, route, request.query)
        return json_answer(200, build_info_json(route.ids[0], reply.build, list(reply.log_entries)))

    async def build_logs(self, request: Any, route: Operation) -> Answer:
        """E2B `TemplateBuildLogsResponse`: entries from a unix-ms cursor, either way."""
        cursor, limit, backward, level = template_requests.logs_query(request.query)
        entries: list[pb.BuildLogEntry] = []
        offset = 0
        while True:  # the lifecycle pages at 100; a build's log is read whole, then cut
            reply = await self._status(request, route, f"logsOffset={offset}&level={level}")
            entries.extend(reply.log_entries)
            if len(reply.log_entries) < template_requests.MAX_STATUS_LIMIT:
                break
            offset += len(reply.log_entries)
        if backward:
            chosen = [e for e in reversed(entries) if not cursor or _ms(e.timestamp) <= cursor]
        else:
            chosen = [e for e in entries if _ms(e.timestamp) >= cursor]
        return json_answer(200, {"logs": [log_entry_json(e) for e in chosen[:limit]]})

    # -- templates by name ----------------------------------------------------------------

    async def alias(self, request: Any, route: Operation) -> Answer:
        """`Template.exists`: 200 for the tenant's own or a shared name, else 404 (never
        E2B's 403 "exists, not yours": another tenant's names are not to be learnt)."""
        template = await self._template(request.tenant, route.resource_id)
        if template.tenant and template.tenant != request.tenant:
            raise NotFound(f"template {route.resource_id[:80]!r} not found")
        return json_answer(200, {"templateID": template.template_id, "public": template.public})

    async def delete(self, request: Any, route: Operation) -> Answer:
        await self._templates.DeleteTemplate(
            pb.DeleteTemplateRequest(tenant=request.tenant, template_id=route.resource_id),
            timeout=_CALL_S,
        )
        return no_content()

    async def update(self, request: Any, route: Operation) -> Answer:
        body = rest_requests.json_object(request.body)
        reply = await self._templates.UpdateTemplate(
            pb.UpdateTemplateRequest(tenant=request.tenant, template_id=route.resource_id,
                                     public=template_requests.public_flag(body)),
            timeout=_CALL_S,
        )  # fmt: skip
        return json_answer(200, {"names": list(reply.template.aliases)})

    async def assign_tags(self, request: Any, _: Operation) -> Answer:
        target, tags = template_requests.tags_body(rest_requests.json_object(request.body),
                                                   "target")  # fmt: skip
        reply = await self._builds.AssignTemplateTags(
            pb.AssignTemplateTagsRequest(tenant=request.tenant, target=target, tags=tags),
            timeout=_CALL_S,
        )
        return json_answer(201, {"tags": list(reply.tags), "buildID": reply.build_id})

    async def remove_tags(self, request: Any, _: Operation) -> Answer:
        name, tags = template_requests.tags_body(rest_requests.json_object(request.body), "name")
        await self._builds.RemoveTemplateTags(
            pb.RemoveTemplateTagsRequest(tenant=request.tenant, name=name, tags=tags),
            timeout=_CALL_S,
        )
        return no_content()

    async def tags(self, request: Any, route: Operation) -> Answer:
        template = await self._template(request.tenant, route.resource_id)
        if template.tenant != request.tenant:
            raise NotFound(f"template {route.resource_id[:80]!r} not found")
        listed = [
            {"tag": tag, "buildID": b.build_id, "createdAt": rest_json.rfc3339(b.created_at)}
            for b in template.builds
            for tag in b.tags
        ]
        return json_answer(200, listed)

    # -- snapshots ------------------------------------------------------------------------

    async def create_snapshot(self, request: Any, route: Operation) -> Answer:
        name = template_requests.snapshot_name(rest_requests.json_object(request.body))
        reply = await self._snapshots.CreateSnapshot(
            pb.CreateSnapshotRequest(tenant=request.tenant, sandbox_id=route.resource_id,
                                     name=name),
            timeout=_FORK_S,
        )  # fmt: skip
        return json_answer(201, snapshot_json(reply.snapshot))

    async def list_snapshots(self, request: Any, _: Operation) -> Answer:
        listing, limit, offset = template_requests.snapshots_query(request.query, request.tenant)
        reply = await self._snapshots.ListSnapshots(listing, timeout=_CALL_S)
        page = list(reply.snapshots)[offset : offset + limit]
        headers: tuple[tuple[str, str], ...] = ()
        if offset + limit < len(reply.snapshots):
            headers = (("x-next-token", str(offset + limit)),)
        return json_answer(200, [snapshot_json(s) for s in page], headers)

    async def fork(self, request: Any, route: Operation) -> Answer:
        body = rest_requests.json_object(request.body)
        fork = template_requests.fork_request(body, request.tenant, route.resource_id)
        reply = await self._snapshots.ForkSandbox(fork, timeout=_FORK_S)
        results: list[dict[str, Any]] = []
        for result in reply.results:
            if result.HasField("sandbox"):
                self._learn(result.sandbox)
                results.append({"sandbox": rest_json.sandbox_json(result.sandbox, self._domain)})
            else:
                status = _grpc_status(result.error.code)
                results.append({"error": {"code": status, "message": result.error.message}})
        return json_answer(201, results)
