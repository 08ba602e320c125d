"""Snapshots: a sandbox's filesystem captured as a template other sandboxes start from.

A snapshot is the sandbox's writable layer frozen as one more layer on top of the layers
its root was mounted from (`layers.LayerStore.freeze`), registered as a template of kind
"snapshot" whose one build keeps the source's start settings (env vars, user, working
directory, start and ready commands, the code interpreter). `Sandbox.create(snapshot_id)`
then starts from those files like from any template.

What is kept: every file of the sandbox, as it was at the moment of the capture. What is
not: memory. Processes, open connections and kernel state are not captured (E2B keeps them
with a VM memory snapshot; a local sandbox is a process tree, not a VM), so a sandbox made
from a snapshot boots afresh on the captured files, with the template's start command run
again.

Consistency: a running sandbox is stopped (SIGSTOP, as a full pause) for the copy and
continued after it, so no process writes while its files are read; a paused one is copied
as it is. The source keeps its id, state and end time.

`fork` is a snapshot that is not kept: the new sandboxes are made from it, then its
template is deleted at once; its layer lives on while they use it (`layers` lifetime).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from extproc.core.errors import (
    AlreadyExists,
    Conflict,
    DomainError,
    InvalidArgument,
    NotFound,
    Unavailable,
)  # fmt: skip
from extproc.core.ids import new_sandbox_id, not_found
from extproc.lifecycle import layers
from extproc.lifecycle.isolation import Isolation
from extproc.lifecycle.processes import Watched, signal_tree
from extproc.lifecycle.sandboxes import CreateSpec, Sandbox, State
from extproc.lifecycle.templates import (
    DEFAULT_TAG,
    READY,
    SNAPSHOT,
    Build,
    Catalog,
    Template,
    check_name,
    split_tag,
)  # fmt: skip

log = logging.getLogger(__name__)


class Source(Protocol):
    """A live sandbox of the local backend, as a snapshot reads it."""

    @property
    def sandbox(self) -> Sandbox: ...

    process: Watched
    lock: asyncio.Lock  # the sandbox's: held for the capture


class Host(Protocol):
    """What snapshots need of the local backend."""

    @property
    def isolation(self) -> Isolation | None: ...

    @property
    def sandboxes_dir(self) -> Path: ...

    @property
    def layers(self) -> layers.LayerStore: ...

    @property
    def depth(self) -> int: ...

    @property
    def live(self) -> Mapping[str, object]: ...

    def catalog_of(self) -> Catalog: ...

    async def create(self, spec: CreateSpec) -> Sandbox: ...

    async def collect_layers(self) -> None: ...


async def capture(backend: Host, entry: Source, tenant: str, layer_id: str) -> tuple[str, ...]:
    """Freeze `entry`'s files as the layer `layer_id`; returns the snapshot's layers, top
    first. The caller holds the entry's lock and has pinned `layer_id`."""
    isolation = backend.isolation
    if isolation is None:
        raise Conflict("snapshots need namespace isolation (the lifecycle runs with "
                       "--isolation none)")  # fmt: skip
    sandbox = entry.sandbox
    directory = backend.sandboxes_dir / sandbox.sandbox_id
    below = layers.sandbox_layers(directory)
    paths = isolation.paths(sandbox.sandbox_id, sandbox.endpoint_host)
    running = sandbox.state is State.RUNNING
    with backend.layers.pin(below):
        if running:
            signal_tree(entry.process.pid, signal.SIGSTOP, backend.depth)
        try:
            await asyncio.to_thread(
                backend.layers.freeze, paths.layer / "upper", paths.uid_base, layer_id, tenant
            )
        finally:
            if running:
                signal_tree(entry.process.pid, signal.SIGCONT, backend.depth)
    return (layer_id, *below)


def _start_settings(catalog: Catalog, sandbox: Sandbox) -> Template:
    """The source's template as the sandbox was made from it (what a snapshot's sandboxes
    start with); a bare template if it has been deleted since."""
    try:
        return catalog.resolve(sandbox.alias or sandbox.template_id, sandbox.tenant)[0]
    except (NotFound, Conflict):
        return Template(sandbox.template_id, memory_mb=sandbox.memory_mb,
                        cpu_count=sandbox.cpu_count)  # fmt: skip


async def create(backend: Host, entry: Source, tenant: str, name: str) -> Template:
    """`POST /sandboxes/{id}/snapshots`: a new snapshot template, or with `name` a new
    build of the tenant's snapshot of that name."""
    catalog = backend.catalog_of()
    existing = None
    if name:
        check_name(name, "snapshot name")
        existing = catalog.named(tenant, name)
        if existing is not None and existing.kind != SNAPSHOT:
            raise AlreadyExists(f"{name!r} is the name of a template, not of a snapshot")
    if existing is None:  # before the copy, not after it
        catalog.check_room(tenant)
    layer_id = layers.new_layer_id()
    with backend.layers.pin([layer_id]):
        async with entry.lock:
            if backend.live.get(entry.sandbox.sandbox_id) is not entry:
                raise not_found(entry.sandbox.sandbox_id)
            source = _start_settings(catalog, entry.sandbox)
            chain = await capture(backend, entry, tenant, layer_id)
        now = time.time()
        build = Build(
            str(uuid.uuid4()), status=READY, created_at=now, finished_at=now,
            tags=(DEFAULT_TAG,), layers=chain, env=tuple(source.env.items()),
            user=source.user, workdir=source.workdir, start_cmd=source.start_cmd,
            ready_cmd=source.ready_cmd, cpu_count=source.cpu_count,
            memory_mb=source.memory_mb, interpreter=source.interpreter, ports=source.ports,
        )  # fmt: skip
        template = existing or Template(
            new_sandbox_id(), aliases=(name,) if name else (), public=False,
            cpu_count=source.cpu_count, memory_mb=source.memory_mb, ports=source.ports,
            interpreter=source.interpreter, kind=SNAPSHOT,
            source_sandbox_id=entry.sandbox.sandbox_id,
        )  # fmt: skip
        catalog.start_build(tenant, template, build)
        stored = catalog.finish_build(template.template_id, build)
    if stored is None:  # deleted in the same instant: nothing refers to the layer
        raise NotFound(f"snapshot {template.template_id} not found")
    return stored


def snapshot_id(template: Template) -> str:
    """What E2B calls the snapshot: its name (else its id) with the tag."""
    return f"{template.aliases[0] if template.aliases else template.template_id}:{DEFAULT_TAG}"


def listed(catalog: Catalog, tenant: str, sandbox_id: str, name: str) -> list[Template]:
    """The tenant's snapshots, newest first, of `sandbox_id` and named `name` when given
    (`name` may carry a tag, and may be the id)."""
    bare = split_tag(name)[0] if name else ""
    found = [
        t for t in catalog.list(tenant, SNAPSHOT)
        if t.tenant == tenant
        and (not sandbox_id or t.source_sandbox_id == sandbox_id)
        and (not bare or bare == t.template_id or bare in t.aliases)
    ]  # fmt: skip
    return sorted(found, key=lambda t: t.updated_at, reverse=True)


async def fork(
    backend: Host, entry: Source, tenant: str, count: int, timeout_s: int
) -> list[Sandbox | DomainError]:
    """`POST /sandboxes/{id}/fork`: `count` sandboxes from one snapshot that is not kept.
    Each fork succeeds or fails on its own; the source's settings carry over."""
    if not 1 <= count <= 100:
        raise InvalidArgument("count must be from 1 to 100")
    snapshot = await create(backend, entry, tenant, "")
    source = entry.sandbox
    try:
        spec = CreateSpec(
            tenant=tenant, template=snapshot.template_id, timeout_s=timeout_s,
            metadata=dict(source.metadata), env_vars=dict(source.env_vars),
            on_timeout=source.on_timeout, auto_resume=source.auto_resume,
            secure=source.secure, allow_internet_access=source.allow_internet_access,
            allow_public_traffic=source.allow_public_traffic,
            timeout_pause_mode=source.timeout_pause_mode,
        )  # fmt: skip
        outcomes = await asyncio.gather(
            *(backend.create(spec) for _ in range(count)), return_exceptions=True
        )
    finally:
        backend.catalog_of().delete(tenant, snapshot.template_id)
        await backend.collect_layers()
    results: list[Sandbox | DomainError] = []
    for outcome in outcomes:
        if isinstance(outcome, Sandbox | DomainError):
            results.append(outcome)
        elif isinstance(outcome, BaseException):
            log.error("a fork of %s failed", source.sandbox_id, exc_info=outcome)
            results.append(Unavailable("the fork could not be started; see the lifecycle log"))
    return results
