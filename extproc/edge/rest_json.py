"""Lifecycle messages -> E2B JSON, with exactly the keys the generated SDK client requires.

The SDK's `from_dict` raises KeyError on a missing required key and ignores extra ones, so
every required key is always written; optional keys are omitted when we have no value.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb

# infra sends this constant for every sandbox; the SDK only requires the key.
CLIENT_ID = "6532622b"
DEFAULT_ENVD_VERSION = "0.6.13"
_STATES = {pb.SANDBOX_STATE_PAUSED: "paused"}
_ON_TIMEOUT = {pb.TIMEOUT_ACTION_PAUSE: "pause"}
_PAUSE_MODES = {pb.PAUSE_MODE_FULL: "full", pb.PAUSE_MODE_FILESYSTEM: "filesystem"}
_BUILD_NAMESPACE = uuid.UUID("7d4b9a4e-5f0c-4c55-8a53-9d1f4bd0b2a1")


def rfc3339(ts: Any) -> str:
    """A google.protobuf.Timestamp (untyped here: protobuf ships no stubs) as RFC 3339 UTC."""
    moment = datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, tz=UTC)
    return moment.isoformat().replace("+00:00", "Z")


def sandbox_json(sandbox: pb.Sandbox, domain: str) -> dict[str, Any]:
    """E2B `Sandbox` (create, connect, resume)."""
    body: dict[str, Any] = {
        "templateID": sandbox.template_id,
        "sandboxID": sandbox.sandbox_id,
        "clientID": CLIENT_ID,
        "envdVersion": sandbox.envd_version or DEFAULT_ENVD_VERSION,
        "domain": domain,
        # Set only when network.allowPublicTraffic is false, null otherwise (as E2B).
        "trafficAccessToken": sandbox.traffic_access_token or None,
    }
    if sandbox.envd_access_token:
        body["envdAccessToken"] = sandbox.envd_access_token
    if sandbox.alias:
        body["alias"] = sandbox.alias
    return body


def _public_traffic(sandbox: pb.Sandbox) -> bool:
    return sandbox.allow_public_traffic if sandbox.HasField("allow_public_traffic") else True


def _listed(sandbox: pb.Sandbox) -> dict[str, Any]:
    body: dict[str, Any] = {
        "templateID": sandbox.template_id,
        "sandboxID": sandbox.sandbox_id,
        "clientID": CLIENT_ID,
        "startedAt": rfc3339(sandbox.started_at),
        "endAt": rfc3339(sandbox.end_at),
        "envdVersion": sandbox.envd_version or DEFAULT_ENVD_VERSION,
        "cpuCount": sandbox.cpu_count,
        "memoryMB": sandbox.memory_mb,
        "diskSizeMB": sandbox.disk_size_mb,
        # STARTING is reported as running: the SDK's enum has only running and paused.
        "state": _STATES.get(sandbox.state, "running"),
        "metadata": dict(sandbox.metadata),
    }
    if sandbox.alias:
        body["alias"] = sandbox.alias
    if sandbox.volume_mounts:
        body["volumeMounts"] = [{"name": m.name, "path": m.path} for m in sandbox.volume_mounts]
    # What the pause kept, for a paused sandbox only (as E2B). A lifecycle from before the
    # field sends none: its pauses were all full ones.
    if sandbox.state == pb.SANDBOX_STATE_PAUSED:
        body["pauseMode"] = _PAUSE_MODES.get(sandbox.pause_mode, "full")
    return body


def listed_sandbox_json(sandbox: pb.Sandbox) -> dict[str, Any]:
    """E2B `ListedSandbox` (GET /sandboxes, /v2/sandboxes)."""
    return _listed(sandbox)


def sandbox_detail_json(sandbox: pb.Sandbox, domain: str) -> dict[str, Any]:
    """E2B `SandboxDetail` (GET /sandboxes/{id})."""
    body = _listed(sandbox)
    body["domain"] = domain
    body["allowInternetAccess"] = sandbox.allow_internet_access
    body["lifecycle"] = {
        "autoResume": sandbox.auto_resume,
        "onTimeout": _ON_TIMEOUT.get(sandbox.on_timeout, "kill"),
    }
    body["network"] = {"allowPublicTraffic": _public_traffic(sandbox)}
    if sandbox.envd_access_token:
        body["envdAccessToken"] = sandbox.envd_access_token
    return body


def metric_json(metric: pb.SandboxMetric) -> dict[str, Any]:
    """E2B `SandboxMetric`: every key is required."""
    return {
        "timestamp": rfc3339(metric.timestamp),
        "timestampUnix": metric.timestamp.seconds,
        "cpuCount": metric.cpu_count,
        "cpuUsedPct": metric.cpu_used_pct,
        "memUsed": metric.mem_used,
        "memTotal": metric.mem_total,
        "memCache": metric.mem_cache,
        "diskUsed": metric.disk_used,
        "diskTotal": metric.disk_total,
    }


def _build_id(template: pb.Template) -> str:
    # An operator's template has no builds, but the SDK wants a build UUID: a stable one.
    return template.build_id or str(uuid.uuid5(_BUILD_NAMESPACE, template.template_id))


_BUILD_STATUS = {pb.BUILD_STATUS_WAITING: "waiting", pb.BUILD_STATUS_BUILDING: "building",
                 pb.BUILD_STATUS_ERROR: "error"}  # fmt: skip


def template_json(template: pb.Template) -> dict[str, Any]:
    """E2B `Template` (GET /templates)."""
    created = rfc3339(template.created_at)
    return {
        "templateID": template.template_id,
        "buildID": _build_id(template),
        "cpuCount": template.cpu_count,
        "memoryMB": template.memory_mb,
        "diskSizeMB": template.disk_size_mb,
        "public": template.public,
        "aliases": list(template.aliases),
        "names": list(template.aliases),
        "createdAt": created,
        "updatedAt": rfc3339(template.updated_at) if template.HasField("updated_at") else created,
        "createdBy": None,
        "lastSpawnedAt": None,
        "spawnCount": 0,
        "buildCount": len(template.builds) or 1,
        "envdVersion": template.envd_version or DEFAULT_ENVD_VERSION,
        "buildStatus": _BUILD_STATUS.get(template.build_status, "ready"),
    }


def _build_json(build: pb.TemplateBuild, template: pb.Template, envd: str) -> dict[str, Any]:
    created = rfc3339(build.created_at)
    body: dict[str, Any] = {
        "buildID": build.build_id,
        "status": _BUILD_STATUS.get(build.status, "ready"),
        "createdAt": created,
        "updatedAt": rfc3339(build.finished_at) if build.HasField("finished_at") else created,
        "cpuCount": build.cpu_count or template.cpu_count,
        "memoryMB": build.memory_mb or template.memory_mb,
        "diskSizeMB": template.disk_size_mb,
        "envdVersion": envd,
    }
    if build.HasField("finished_at"):
        body["finishedAt"] = rfc3339(build.finished_at)
    return body


def template_with_builds_json(template: pb.Template) -> dict[str, Any]:
    """E2B `TemplateWithBuilds` (GET /templates/{id}): its builds, newest first; an
    operator's template has one ready build standing for its image."""
    body = template_json(template)
    if template.builds:
        envd = body["envdVersion"]
        body["builds"] = [_build_json(b, template, envd) for b in reversed(template.builds)]
        return body
    body["builds"] = [
        {
            "buildID": body["buildID"],
            "status": "ready",
            "createdAt": body["createdAt"],
            "updatedAt": body["updatedAt"],
            "finishedAt": body["updatedAt"],
            "cpuCount": template.cpu_count,
            "memoryMB": template.memory_mb,
            "diskSizeMB": template.disk_size_mb,
            "envdVersion": body["envdVersion"],
        }
    ]
    return body
