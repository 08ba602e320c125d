"""The lifecycle service's domain objects as protobuf messages, for every servicer."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp  # type: ignore[import-untyped]

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc.lifecycle.sandboxes import Metric, Sandbox, State
from extproc.lifecycle.templates import Build, Template
from extproc.lifecycle.volumes import Volume

D = TypeVar("D")
M = TypeVar("M")


def enum_number(value: int) -> Any:
    # Our IntEnums share the proto's numbers; the stubs type enum fields by their proto
    # enum class, which an int is at run time.
    return int(value)


def timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def sandbox_pb(s: Sandbox) -> pb.Sandbox:
    return pb.Sandbox(
        sandbox_id=s.sandbox_id, template_id=s.template_id, alias=s.alias, tenant=s.tenant,
        metadata=s.metadata, env_vars=s.env_vars, started_at=timestamp(s.started_at),
        end_at=timestamp(s.end_at), state=enum_number(s.state), cpu_count=s.cpu_count,
        memory_mb=s.memory_mb, disk_size_mb=s.disk_size_mb, envd_version=s.envd_version,
        envd_access_token=s.envd_access_token, endpoint_host=s.endpoint_host,
        on_timeout=enum_number(s.on_timeout), auto_resume=s.auto_resume, secure=s.secure,
        allow_internet_access=s.allow_internet_access, end_reason=s.end_reason,
        allow_public_traffic=s.allow_public_traffic,
        traffic_access_token=s.traffic_access_token,
        pause_mode=enum_number(s.pause_mode if s.state is State.PAUSED else 0),
        volume_mounts=[pb.VolumeMount(name=m.name, path=m.path) for m in s.volume_mounts],
    )  # fmt: skip


# templates.py's build statuses and kinds -> the proto's enums.
BUILD_STATUS = {"waiting": pb.BUILD_STATUS_WAITING, "building": pb.BUILD_STATUS_BUILDING,
                "ready": pb.BUILD_STATUS_READY, "error": pb.BUILD_STATUS_ERROR}  # fmt: skip
_KINDS = {"template": pb.TEMPLATE_KIND_TEMPLATE, "snapshot": pb.TEMPLATE_KIND_SNAPSHOT}


def build_pb(b: Build) -> pb.TemplateBuild:
    return pb.TemplateBuild(
        build_id=b.build_id, status=BUILD_STATUS[b.status], created_at=timestamp(b.created_at),
        finished_at=timestamp(b.finished_at) if b.finished_at else None, tags=list(b.tags),
        cpu_count=b.cpu_count, memory_mb=b.memory_mb, reason=b.reason,
        reason_step=b.reason_step,
    )  # fmt: skip


def template_pb(t: Template) -> pb.Template:
    return pb.Template(
        template_id=t.template_id, aliases=list(t.aliases), tenant=t.tenant, public=t.public,
        cpu_count=t.cpu_count, memory_mb=t.memory_mb, disk_size_mb=t.disk_size_mb,
        envd_version=t.envd_version, created_at=timestamp(t.created_at),
        updated_at=timestamp(t.updated_at), ports=list(t.ports), build_id=t.build_id,
        build_status=BUILD_STATUS[t.build_status], builds=[build_pb(b) for b in t.builds],
        kind=_KINDS[t.kind], source_sandbox_id=t.source_sandbox_id,
    )  # fmt: skip


def metric_pb(m: Metric) -> pb.SandboxMetric:
    return pb.SandboxMetric(
        timestamp=timestamp(m.timestamp), cpu_count=m.cpu_count, cpu_used_pct=m.cpu_used_pct,
        mem_used=m.mem_used, mem_total=m.mem_total, mem_cache=m.mem_cache,
        disk_used=m.disk_used, disk_total=m.disk_total,
    )  # fmt: skip


def volume_pb(volume: Volume) -> pb.Volume:
    return pb.Volume(
        volume_id=volume.volume_id, name=volume.name, tenant=volume.tenant,
        token=volume.token, created_at=timestamp(volume.created_at),
    )  # fmt: skip


def each(to_pb: Callable[[D], M]) -> Callable[[Iterable[D]], list[M]]:
    """`to_pb` for a repeated field: every item of a list the backend returned."""
    return lambda items: [to_pb(item) for item in items]
