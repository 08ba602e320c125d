"""Template builds of the local backend: E2B's v3/v2 build flow over layers.

The SDK's `Template.build` makes three kinds of call, and so does this module:
1. `request`: the template (found by its name in the tenant, or made) gets a new build,
   "waiting"; the tags to give it come along.
2. the COPY steps' files are uploaded (`uploads`), then `start` runs the build in the
   background ("building").
3. `status` reports the build's state and its log from an offset, until "ready" or
   "error" (with the failing step, which the SDK maps to the line of the user's code).

A build starts from its base's layers (`build_steps.base_of`) and walks the steps:
ENV/WORKDIR/USER change the context, RUN and COPY each become a layer on top, found in
the cache by key ("CACHED" in the log) or made in a build sandbox (`build_sandbox`). The
finished build records the layers and the start settings; its template becomes startable
at it and its tags move to it. A step that fails ends the build with the step's exit code
and the end of its output in the reason.

Logs are kept in memory for the builds of this process and in `<state>/builds/<id>.jsonl`
(so status survives a restart); a build that was running when the service stopped is
reported failed (templates.py). Builds run at most `_MAX_BUILDS` at a time; every layer
a build uses is pinned until it ends, and unused layers are collected after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import tarfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from extproc.core.errors import AlreadyExists, Conflict, InvalidArgument, NotFound
from extproc.core.ids import new_sandbox_id
from extproc.lifecycle import build_sandbox, rootfs
from extproc.lifecycle.build_host import BuildHost
from extproc.lifecycle.build_steps import (
    BASE_STEP,
    COPY,
    FINALIZE_STEP,
    RUN,
    BuildSpec,
    Context,
    Step,
    StepError,
    apply_context,
    base_of,
    cache_key,
    check_step,
    copy_roots,
    copy_script,
    describe,
    run_script,
    step_name,
)
from extproc.lifecycle.templates import (
    BUILDING,
    DEFAULT_TAG,
    FAILED,
    READY,
    TEMPLATE,
    Build,
    Template,
    check_name,
    check_tag,
    split_tag,
)

log = logging.getLogger(__name__)

WAITING = "waiting"
LEVELS = ("debug", "info", "warn", "error")
# A build step's own time limit, and the whole build's (E2B's builds are limited to an hour
# in all): a build slot is shared, and a build that never ends would hold it for good.
STEP_TIMEOUT_S = 1800.0
BUILD_TIMEOUT_S = 3600.0
# Layers above the base a sandbox may be started from (the overlay's option page bounds it).
MAX_LAYERS = 48
# Build sandboxes get at least this much memory: package managers need it.
MIN_BUILD_MEMORY_MB = 1024
# Builds at once, and of one tenant at once: no tenant can hold every slot while the
# others' builds wait.
_MAX_BUILDS = 2
_MAX_BUILDS_PER_TENANT = 1
_MAX_LOG_ENTRIES = 20_000


@dataclass(frozen=True)
class LogEntry:
    timestamp: float
    level: str
    message: str
    step: str = ""


class _Failed(Exception):
    def __init__(self, step: str, message: str) -> None:
        super().__init__(message)
        self.step = step
        self.message = message


class BuildLogs:
    """Per build: entries in memory for this process's builds, and on disk for all."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._open: dict[str, list[LogEntry]] = {}

    def _path(self, build_id: str) -> Path:
        return self.root / f"{uuid.UUID(build_id)}.jsonl"

    def add(self, build_id: str, level: str, message: str, step: str = "") -> None:
        entries = self._open.setdefault(build_id, [])
        if len(entries) >= _MAX_LOG_ENTRIES:
            return
        entry = LogEntry(time.time(), level, message, step)
        if len(entries) == _MAX_LOG_ENTRIES - 1:
            entry = replace(entry, level="warn", message="(further log lines are not kept)")
        entries.append(entry)
        self.root.mkdir(parents=True, exist_ok=True)
        with self._path(build_id).open("a", encoding="utf-8") as out:
            out.write(json.dumps(asdict(entry)) + "\n")

    def read(self, build_id: str) -> list[LogEntry]:
        entries = self._open.get(build_id)
        if entries is not None:
            return entries
        try:
            lines = self._path(build_id).read_text(encoding="utf-8").splitlines()
        except (FileNotFoundError, ValueError):
            return []
        return [LogEntry(**json.loads(line)) for line in lines if line.strip()]

    def close(self, build_id: str) -> None:
        self._open.pop(build_id, None)

    def remove(self, build_ids: list[str]) -> None:
        for build_id in build_ids:
            self._open.pop(build_id, None)
            with contextlib.suppress(FileNotFoundError, ValueError):
                self._path(build_id).unlink()


def _release(base: Path) -> tuple[str, str]:
    """The base's Debian (codename, version), for `build_steps.base_of`."""
    try:
        values = rootfs.parse_os_release((base / "etc/os-release").read_text())
    except OSError:
        return "", ""
    return values.get("VERSION_CODENAME", ""), values.get("VERSION_ID", "")


def _members(archive: Path) -> list[tuple[str, bool]]:
    """(name, is a directory) of every entry of an uploaded tar; read, never extracted."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            found = []
            for member in tar:
                name = member.name.removeprefix("./").rstrip("/")
                if name and name != ".":
                    found.append((name, member.isdir()))
            return found
    except (tarfile.TarError, OSError, EOFError) as error:
        message = f"the uploaded files are not a readable tar archive: {error}"
        raise InvalidArgument(message) from error


class Builder:
    def __init__(self, backend: BuildHost, logs_dir: Path) -> None:
        self._backend = backend
        self.logs = BuildLogs(logs_dir)
        self._slots = asyncio.Semaphore(_MAX_BUILDS)
        self._tenant_slots: dict[str, asyncio.Semaphore] = {}

    # -- the three calls ------------------------------------------------------------------

    def request(
        self, tenant: str, name: str, tags: list[str], cpu_count: int, memory_mb: int
    ) -> tuple[Template, Build]:
        """A new waiting build of the tenant's template called `name` (made if new)."""
        catalog = self._backend.catalog_of()
        bare, tag = split_tag(name)
        check_name(bare)
        wanted = [check_tag(t) for t in (*([tag] if tag else []), *tags)]
        template = catalog.named(tenant, bare)
        if template is not None and template.kind != TEMPLATE:
            raise AlreadyExists(f"{bare!r} is the name of a snapshot, not of a template")
        if template is None:
            template = Template(
                new_sandbox_id(), aliases=(bare,), public=False,
                cpu_count=cpu_count or 2, memory_mb=memory_mb or 512,
            )  # fmt: skip
        else:
            superseded = [b for b in template.builds if b.status == WAITING]
            for old in superseded:
                catalog.finish_build(template.template_id, replace(
                    old, status=FAILED, finished_at=time.time(), reason_step=FINALIZE_STEP,
                    reason="superseded by a newer build request"))  # fmt: skip
            template = catalog.owned(tenant, template.template_id)
        build = Build(
            str(uuid.uuid4()), status=WAITING, created_at=time.time(),
            tags=tuple(dict.fromkeys(wanted or [DEFAULT_TAG])),
            cpu_count=cpu_count or template.cpu_count,
            memory_mb=memory_mb or template.memory_mb,
        )  # fmt: skip
        if not 1 <= build.cpu_count <= 64 or not 128 <= build.memory_mb <= 262144:
            raise InvalidArgument("cpuCount must be 1..64 and memoryMB 128..262144")
        return catalog.start_build(tenant, template, build), build

    def start(self, tenant: str, template_id: str, build_id: str, spec: BuildSpec) -> None:
        """Begin the waiting build in the background."""
        catalog = self._backend.catalog_of()
        template, build = catalog.get_build(template_id, build_id, tenant)
        if build.status != WAITING:
            raise Conflict(f"build {build_id} has already been started")
        running = replace(build, status=BUILDING)
        catalog.finish_build(template.template_id, running)
        self.logs.add(build_id, "info", f"Building template {template.template_id}")
        self._backend.spawn_task(
            lambda: self._run(tenant, template.template_id, running, spec), f"build-{build_id}"
        )

    def status(
        self, tenant: str, template_id: str, build_id: str, offset: int, limit: int, level: str
    ) -> tuple[Build, list[LogEntry]]:
        _, build = self._backend.catalog_of().get_build(template_id, build_id, tenant)
        entries = self.logs.read(build_id)
        if level:
            floor = LEVELS.index(level)
            entries = [e for e in entries if LEVELS.index(e.level) >= floor]
        return build, entries[offset : offset + limit]

    # -- running --------------------------------------------------------------------------

    async def _run(self, tenant: str, template_id: str, build: Build, spec: BuildSpec) -> None:
        started = time.monotonic()
        # The layers stay pinned until the finished build (which references them) is stored.
        with contextlib.ExitStack() as pins:
            try:
                async with self._tenant_slot(tenant), self._slots:
                    finished = await self._build(tenant, build, spec, pins)
                self.logs.add(build.build_id, "info",
                              f"Build finished in {time.monotonic() - started:.1f} s")  # fmt: skip
            except _Failed as failed:
                self.logs.add(build.build_id, "error", failed.message, failed.step)
                finished = replace(build, status=FAILED, reason=failed.message,
                                   reason_step=failed.step)  # fmt: skip
            except Exception:
                log.exception("template build %s failed", build.build_id)
                message = "the build failed inside the gateway; see the lifecycle service's log"
                self.logs.add(build.build_id, "error", message, FINALIZE_STEP)
                finished = replace(build, status=FAILED, reason=message,
                                   reason_step=FINALIZE_STEP)  # fmt: skip
            finished = replace(finished, finished_at=time.time())
            catalog = self._backend.catalog_of()
            if catalog.finish_build(template_id, finished) is None:
                self.logs.add(build.build_id, "warn", "the template was deleted during its build")
        self.logs.close(build.build_id)
        await self._backend.refresh_template_pools()
        await self._backend.collect_layers()

    def _base(self, tenant: str, spec: BuildSpec) -> Template:
        isolation = self._backend.isolation
        if isolation is None or isolation.base is None:
            raise _Failed(BASE_STEP, "building templates needs sandbox isolation (the "
                                     "lifecycle service runs with --isolation none)")  # fmt: skip
        try:
            name = base_of(spec, _release(isolation.base))
            parent, _ = self._backend.catalog_of().resolve(name, tenant)
        except StepError as error:
            raise _Failed(error.step, error.message) from error
        except (NotFound, Conflict) as error:
            raise _Failed(BASE_STEP, f"base template: {error.message}") from error
        if not parent.available:
            raise _Failed(BASE_STEP, f"base template {name!r}: {parent.unavailable_reason}")
        return parent

    @contextlib.asynccontextmanager
    async def _tenant_slot(self, tenant: str) -> AsyncIterator[None]:
        """One of the tenant's own `_MAX_BUILDS_PER_TENANT` slots, taken before a shared one."""
        # kept once made (one per tenant that ever built): dropping an idle one races a
        # waiter that was just handed it
        slots = self._tenant_slots.setdefault(tenant, asyncio.Semaphore(_MAX_BUILDS_PER_TENANT))
        async with slots:
            yield

    async def _build(
        self, tenant: str, build: Build, spec: BuildSpec, pins: contextlib.ExitStack
    ) -> Build:
        deadline = time.monotonic() + BUILD_TIMEOUT_S
        say = self.logs.add
        parent = self._base(tenant, spec)
        origin = spec.from_template or spec.from_image or "e2bdev/base"
        say(build.build_id, "info", f"[base] FROM {origin}", BASE_STEP)
        for index, step in enumerate(spec.steps):
            try:
                check_step(step, index)
            except StepError as error:
                raise _Failed(error.step, error.message) from error
        context = Context(
            env=tuple(parent.env.items()), user=parent.user or Context().user,
            workdir=parent.workdir or Context().workdir,
        )  # fmt: skip
        chain = parent.layers
        below = chain[0] if chain else f"template:{parent.template_id}"
        forced = spec.force
        total = len(spec.steps)
        pins.enter_context(self._backend.layers.pin(chain))
        for index, step in enumerate(spec.steps):
            name = step_name(index)
            label = f"[{index + 1}/{total}] {describe(step)}"
            forced = forced or step.force
            if step.kind not in (RUN, COPY):
                context = apply_context(step, context)
                say(build.build_id, "info", label, name)
                continue
            if len(chain) >= MAX_LAYERS:
                raise _Failed(name, f"step {name}: a template may have at most {MAX_LAYERS} "
                                    "RUN and COPY steps, its parents' included")  # fmt: skip
            key = cache_key(tenant, below, step, context, forced)
            pins.enter_context(self._backend.layers.pin([key]))
            if not forced and self._backend.layers.get(key, tenant) is not None:
                say(build.build_id, "info", f"CACHED {label}", name)
            else:
                say(build.build_id, "info", label, name)
                await self._make_layer(
                    tenant, build, chain, step, index, context, key, deadline
                )
            chain, below = (key, *chain), key
        say(build.build_id, "info", "[finalize] saving the template", FINALIZE_STEP)
        return replace(
            build, status=READY, layers=chain, env=context.env, user=context.user,
            workdir=context.workdir, start_cmd=spec.start_cmd or parent.start_cmd,
            ready_cmd=spec.ready_cmd or ("" if spec.start_cmd else parent.ready_cmd),
            interpreter=parent.interpreter, ports=parent.ports,
            memory_mb=max(build.memory_mb, parent.memory_mb) if parent.interpreter else (
                build.memory_mb),
        )  # fmt: skip

    async def _make_layer(
        self, tenant: str, build: Build, chain: tuple[str, ...], step: Step, index: int,
        context: Context, key: str, deadline: float,
    ) -> None:  # fmt: skip
        name = step_name(index)
        left = deadline - time.monotonic()
        if left <= 0:
            raise _Failed(name, f"step {name}: the build ran past its {BUILD_TIMEOUT_S:g} s")
        files = None
        if step.kind == COPY:
            files = self._backend.uploads.path(tenant, step.files_hash)
            if not files.is_file():
                raise _Failed(name, f"step {name}: the files of COPY {step.args[0]} were "
                                    "not uploaded (ask /templates/{id}/files/{hash})")  # fmt: skip
            try:
                roots = copy_roots(await asyncio.to_thread(_members, files))
            except InvalidArgument as error:
                raise _Failed(name, f"step {name}: {error.message}") from error
            script = copy_script(step, context, roots)
        else:
            user = step.args[1] if len(step.args) > 1 and step.args[1] else context.user
            script = run_script(step.args[0], user, context)
        tail: list[str] = []

        def emit(line: str) -> None:
            tail.append(line)
            del tail[:-20]
            self.logs.add(build.build_id, "info", line, name)

        try:
            code = await build_sandbox.run_step(
                self._backend, chain, script, files=files,
                memory_mb=max(build.memory_mb, MIN_BUILD_MEMORY_MB), layer_id=key,
                tenant=tenant, emit=emit, timeout_s=min(STEP_TIMEOUT_S, left),
            )  # fmt: skip
        except build_sandbox.StepTimedOut as error:
            raise _Failed(name, f"step {name}: {error}") from error
        if code != 0:
            ended = f"exited with code {code}" if code is not None else "was killed"
            last = "\n".join(tail[-5:])
            raise _Failed(name, f"step {name} ({describe(step)[:200]}) {ended}"
                                + (f":\n{last}" if last else ""))  # fmt: skip


def builds_of(templates: list[Template]) -> Iterator[str]:
    """Every build id of `templates` (their logs go when they go)."""
    for template in templates:
        for build in template.builds:
            yield build.build_id
