"""The contract between the gRPC servicer and a sandbox backend.

Two backends implement it: `local` (processes under bubblewrap) and `kubernetes`
(agent-sandbox CRs); the servicer does not know which one it serves.
Methods raise the domain errors of `extproc.core.errors`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from extproc.core.errors import DomainError
from extproc.lifecycle.build_steps import BuildSpec
from extproc.lifecycle.building import LogEntry
from extproc.lifecycle.idempotency import KeyedBackend
from extproc.lifecycle.sandboxes import (
    CreateSpec,
    Event,
    ListQuery,
    Metric,
    Page,
    PauseMode,
    Sandbox,
)
from extproc.lifecycle.templates import Build, Template
from extproc.lifecycle.volumes import Volume


class VolumeBackend(Protocol):
    """What a backend offers for volumes (`volume_service`)."""

    async def create_volume(self, tenant: str, name: str) -> Volume: ...

    async def list_volumes(self, tenant: str) -> list[Volume]: ...

    async def get_volume(self, tenant: str, volume_id: str) -> Volume: ...

    async def delete_volume(self, tenant: str, volume_id: str) -> None: ...


class Backend(KeyedBackend, VolumeBackend, Protocol):
    """The servicers check the tenant rules before a call gets here (`service`): a method
    that acts for one tenant is never called with an empty one. Create is wrapped in the
    servicer's Idempotency-Key handling (`KeyedBackend`, `idempotency`)."""

    async def create(self, spec: CreateSpec) -> Sandbox: ...

    async def get(self, sandbox_id: str, tenant: str) -> Sandbox: ...

    async def list_sandboxes(self, query: ListQuery) -> Page: ...

    async def kill(self, sandbox_id: str, tenant: str) -> None: ...

    async def set_timeout(self, sandbox_id: str, tenant: str, timeout_s: int) -> Sandbox: ...

    async def refresh(self, sandbox_id: str, tenant: str, duration_s: int | None) -> Sandbox: ...

    async def connect(
        self, sandbox_id: str, tenant: str, timeout_s: int | None
    ) -> tuple[Sandbox, bool]: ...

    async def pause(
        self, sandbox_id: str, tenant: str, mode: PauseMode = PauseMode.FULL
    ) -> Sandbox: ...

    async def resume(self, sandbox_id: str, tenant: str, timeout_s: int | None) -> Sandbox: ...

    async def metrics(
        self, sandbox_id: str, tenant: str, start: int | None = None, end: int | None = None
    ) -> list[Metric]:
        """The samples with start <= timestamp <= end, in whole unix seconds, inclusive
        (None: unbounded), oldest first; `metric_history.within` filters a list so. The
        servicer has already refused start > end."""
        ...

    def watch(self) -> AsyncIterator[Event]: ...

    async def list_templates(self, tenant: str) -> list[Template]: ...

    async def get_template(self, template: str, tenant: str) -> Template: ...

    async def create_template(self, tenant: str, template: Template) -> Template: ...

    async def update_template(self, tenant: str, template_id: str, public: bool) -> Template: ...

    async def delete_template(self, tenant: str, template_id: str) -> None: ...

    # Template builds and snapshots (building.py, snapshots.py); a backend that cannot
    # build raises Unimplemented naming what is missing.

    async def request_build(
        self, tenant: str, name: str, tags: list[str], cpu_count: int, memory_mb: int
    ) -> tuple[Template, Build]: ...

    async def file_upload(
        self, tenant: str, template_id: str, files_hash: str
    ) -> tuple[bool, str]: ...

    async def start_build(
        self, tenant: str, template_id: str, build_id: str, spec: BuildSpec
    ) -> None: ...

    async def build_status(
        self, tenant: str, template_id: str, build_id: str, offset: int, limit: int, level: str
    ) -> tuple[Build, list[LogEntry]]: ...

    async def assign_tags(self, tenant: str, target: str, tags: list[str]) -> Build: ...

    async def remove_tags(self, tenant: str, name: str, tags: list[str]) -> None: ...

    async def create_snapshot(self, tenant: str, sandbox_id: str, name: str) -> Template: ...

    async def list_snapshots(self, tenant: str, sandbox_id: str, name: str) -> list[Template]: ...

    async def fork(
        self, tenant: str, sandbox_id: str, count: int, timeout_s: int
    ) -> list[Sandbox | DomainError]: ...
