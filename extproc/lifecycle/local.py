"""The local backend: sandboxes as supervised picod processes on this machine.

State lives in an in-memory index (the authority for reads) mirrored to SQLite through one
writer (`store`); every change is committed before the RPC that made it returns, so a
restarted service re-adopts what the last one handed out (`adopting`). Per-sandbox changes
are serialised by a per-sandbox lock; a killed sandbox leaves the index before its processes
are gone, so it is never served half-dead.

A pause is full (SIGSTOP: the processes continue where they were on resume) or filesystem
only (the processes end, the files stay, and a resume starts the sandbox afresh on them:
`relaunching`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from extproc.core import timeouts
from extproc.core.errors import (
    Conflict,
    DomainError,
    NotFound,
    ResourceExhausted,
    Unavailable,
)  # fmt: skip
from extproc.core.ids import new_sandbox_id
from extproc.core.request_context import outside_requests
from extproc.core.tokens import access_token, load_or_create_seed
from extproc.lifecycle import (
    adopting,
    building,
    data_stack,
    layers,
    listing,
    mounting,
    relaunching,
    snapshots,
    spawning,
    template_start,
    tenancy,
    uploads,
)  # fmt: skip
from extproc.lifecycle.addresses import Addresses
from extproc.lifecycle.admission import Admission
from extproc.lifecycle.build_steps import BuildSpec
from extproc.lifecycle.idempotency import IDEMPOTENCY_WINDOW_S, RecordedKey
from extproc.lifecycle.isolation import Isolation
from extproc.lifecycle.measuring import Meter
from extproc.lifecycle.pooling import Pool
from extproc.lifecycle.probing import Probe
from extproc.lifecycle.processes import NO_PROCESS, Watched, signal_tree, wait_gone
from extproc.lifecycle.readings import Target
from extproc.lifecycle.reaping import Clock, Reaper
from extproc.lifecycle.sandboxes import (
    CreateSpec,
    Event,
    EventType,
    ListQuery,
    Metric,
    OnTimeout,
    Page,
    PauseMode,
    Sandbox,
    State,
    VolumeMount,
)  # fmt: skip
from extproc.lifecycle.settings import LocalSettings
from extproc.lifecycle.store import Row, Store
from extproc.lifecycle.templates import INTERPRETER_TEMPLATE, Build, Catalog, Template
from extproc.lifecycle.validation import check_env_vars, check_metadata
from extproc.lifecycle.volumes import LocalVolumes, Reservation, Volume
from extproc.lifecycle.watching import Hub
from extproc.lifecycle.zygote import log_tail

log = logging.getLogger(__name__)
# E2B keeps an Idempotency-Key for 24 h; so do we, in SQLite with the sandbox's row.
_PRUNE_EVERY_S = 3600.0
_KILL_WAIT_S = 5.0


def _pool_key(template: Template) -> str:
    """The pool a Create of `template` takes from: a built template's is its build's."""
    return f"{template.template_id}@{template.build_id}" if template.build_id else (
        template.template_id)  # fmt: skip


@dataclass
class Live:
    row: Row
    process: Watched
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def sandbox(self) -> Sandbox:
        return self.row.sandbox


class LocalBackend:
    def __init__(self, settings: LocalSettings, clock: Clock = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.dir = settings.state_dir
        self.sandboxes_dir = self.dir / "sandboxes"
        self.seed = b""
        self.catalog: Catalog | None = None
        self.store = Store(self.dir / "lifecycle.sqlite3")
        self.hub = Hub()
        self.addresses = Addresses()
        self.meter = Meter(
            clock=clock, hub=self.hub, running=self._running_targets,
            target_of=self._metric_target_of,
            # Settings that predate these fields sample at E2B's cadence.
            interval_s=settings.metrics_interval_s,
            max_samples=settings.metrics_max_samples,
        )  # fmt: skip
        self.live: dict[str, Live] = {}
        self.pools: dict[str, Pool[Live]] = {}
        # The run tasks of built templates' pools, which come and go with builds.
        self._pool_tasks: dict[str, asyncio.Task[None]] = {}
        self.reaper = Reaper(clock, self._end_at_of, self._expire)
        self.isolation = (
            Isolation(settings, self.sandboxes_dir) if settings.isolation != "none" else None
        )
        # With isolation a sandbox's servers are reachable from the hub namespace only.
        connect = self.isolation.hub_sockets.open_connection if self.isolation else None
        self.probe = Probe(connect or asyncio.open_connection)
        self.admission = Admission(settings.max_sandboxes, clock)
        self.volumes = LocalVolumes(
            self.dir, settings.volume_mb, settings.max_volumes, clock,
            max_per_tenant=settings.max_volumes_per_tenant,
            unavailable="" if self.isolation else
            "volumes need sandbox isolation (--isolation namespaces): each is a filesystem "
            "image mounted into sandboxes' own mount namespaces",
        )  # fmt: skip
        self._tasks: set[asyncio.Task[None]] = set()
        self._starting = 0
        self._start_slots = asyncio.Semaphore(settings.max_concurrent_starts)
        # Built templates and snapshots: their layers, the COPY steps' uploads, the builds.
        self.layers = layers.LayerStore(self.dir / "layers")
        self.uploads = uploads.UploadStore(self.dir / "uploads")
        self.builder = building.Builder(self, self.dir / "builds")
        self._upload_server = uploads.UploadServer(self.uploads, uploads.socket_path(self.dir))

    # -- start and stop -------------------------------------------------------------------

    async def start(self) -> list[asyncio.Task[None]]:
        """Open state, re-adopt survivors; return the long-running tasks to supervise."""
        self.sandboxes_dir.mkdir(parents=True, exist_ok=True)
        # The database holds the sandboxes' env vars, the seed mints every access token:
        # readable by the gateway's user only.
        self.dir.chmod(0o700)
        self.seed = load_or_create_seed(self.dir / "token-seed")
        self.uploads.use_seed(self.seed)
        await asyncio.to_thread(self.layers.load)
        self.catalog = Catalog.load(
            self.dir / "templates.json", max_per_tenant=self.settings.max_templates_per_tenant
        )
        if self.isolation is not None:
            await asyncio.to_thread(self.isolation.start)
        else:
            log.warning(
                "ISOLATION IS OFF (--isolation none): sandboxes run as plain processes of "
                "this user that can see and change this machine's files and network"
            )
        self.catalog.interpreter_missing = spawning.interpreter_missing(self.settings)
        if self.catalog.interpreter_missing:
            log.warning("%s", self.catalog.interpreter_missing)
        await self.store.open(prune_before=self.clock() - 86400)
        for database in self.dir.glob("lifecycle.sqlite3*"):
            database.chmod(0o600)
        await self.volumes.start(self.seed)
        await adopting.recover(adopting.Recovery(
            store=self.store, sandboxes_dir=self.sandboxes_dir,
            marker=spawning.marker(self.settings, ""), clock=self.clock,
            token_of=functools.partial(access_token, self.seed),
            is_healthy=functools.partial(self.probe.is_healthy, limit_s=5.0),
            files_kept=lambda s: relaunching.files_kept(
                s, self.sandboxes_dir / s.sandbox_id, self.isolation),
            adopt=self._adopt, free=self.free, remove_strays=self._remove_strays,
        ))  # fmt: skip
        await self.collect_layers()
        await self._upload_server.start()
        for sandbox_id, mounts in (await self.volumes.adopted(list(self.live))).items():
            entry = self.live[sandbox_id]
            entry.row = replace(entry.row, sandbox=replace(entry.sandbox, volume_mounts=mounts))
        tasks = [asyncio.create_task(self.reaper.run(), name="lifecycle-reaper"),
                 asyncio.create_task(self.meter.run(), name="lifecycle-metrics"),
                 asyncio.create_task(self._prune_ended(), name="lifecycle-prune")]  # fmt: skip
        sizes = {"base": self.settings.pool_size,
                 INTERPRETER_TEMPLATE: self.settings.interpreter_pool_size}  # fmt: skip
        for template_id, size in sizes.items():
            if size <= 0 or not self._pool_can_run(template_id):
                continue
            pool = self._make_pool(template_id, size)
            self.pools[template_id] = pool
            tasks.append(asyncio.create_task(pool.run(), name=f"lifecycle-pool-{template_id}"))
        await self.refresh_template_pools()
        return tasks

    async def refresh_template_pools(self) -> None:
        """Warm pools of `template_pool_size` for every built template's current build
        (key `<id>@<build>`): a new build gets one, an old build's or a deleted template's
        is drained."""
        size = self.settings.template_pool_size
        wanted = set()
        if size > 0 and self.isolation is not None:
            wanted = {_pool_key(t) for t in self._catalog().list("") if t.tenant and t.build}
        for key in [k for k in self.pools if "@" in k and k not in wanted]:
            pool = self.pools.pop(key)
            task = self._pool_tasks.pop(key, None)
            if task is not None:
                task.cancel()
            for entry in pool.drain():
                name = f"lifecycle-pool-drained-{entry.sandbox.sandbox_id}"
                self._spawn_task(functools.partial(self._destroy, entry), name)
        for key in wanted - set(self.pools):
            pool = self._make_pool(key, size)
            self.pools[key] = pool
            # a build's or a Create's request may add the pool; the pool outlives it
            self._pool_tasks[key] = asyncio.create_task(
                pool.run(), name=f"lifecycle-pool-{key}", context=outside_requests()
            )

    def _pool_can_run(self, template_id: str) -> bool:
        try:
            template, _ = self._catalog().resolve(template_id, "")
        except NotFound:
            return False  # removed from templates.json by the operator
        return template.available

    def _make_pool(self, template_id: str, size: int) -> Pool[Live]:
        def dispose(entry: Live) -> None:
            # Died while waiting in the pool: free its address and directory now.
            log.warning("pool %s: warm sandbox %s died", template_id, entry.sandbox.sandbox_id)
            self._spawn_task(
                lambda: self._destroy(entry), f"lifecycle-pool-died-{entry.sandbox.sandbox_id}"
            )

        async def warm() -> Live:
            entry = await self._warm(template_id)
            entry.process.exited.add_done_callback(lambda _: pool.lost(entry))
            return entry

        pool = Pool(
            template_id, size, warm, lambda e: not e.process.exited.done(), self._has_room,
            dispose,
        )  # fmt: skip
        return pool

    async def close(self) -> None:
        pooled = [e for p in self.pools.values() for e in p.drain()]
        await asyncio.gather(*(self._destroy(e) for e in pooled))
        for entry in list(self.live.values()):
            if self.settings.kill_on_exit:
                await self._end(entry, EventType.KILLED, "killed")
            else:
                entry.process.close()  # keeps running; the next start re-adopts it
        for task in [*self._tasks, *self._pool_tasks.values()]:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._upload_server.close()
        await self.store.close()
        await self.volumes.close()
        if self.isolation is not None:
            await asyncio.to_thread(self.isolation.close, bool(self.live))

    def spawn_task(self, coro: Callable[[], object], name: str) -> None:
        """Run `coro()` in the background; cancelled when the backend closes."""
        self._spawn_task(coro, name)

    def _spawn_task(self, coro: Callable[[], object], name: str) -> None:
        async def wrapper() -> None:
            await coro()  # type: ignore[misc]

        task = asyncio.create_task(wrapper(), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- helpers --------------------------------------------------------------------------

    @property
    def _depth(self) -> int:
        return spawning.DEPTH if self.isolation else spawning.DEPTH_UNISOLATED

    def _has_room(self) -> bool:
        pooled = sum(p.ready for p in self.pools.values())
        return len(self.live) + pooled + self._starting < self.settings.max_sandboxes

    def _end_at_of(self, sandbox_id: str) -> float | None:
        entry = self.live.get(sandbox_id)
        if entry is None or entry.sandbox.state is not State.RUNNING:
            return None
        return entry.sandbox.end_at

    @property
    def depth(self) -> int:
        """How far below its supervisor a sandbox's own processes are (`signal_tree`)."""
        return self._depth

    def catalog_of(self) -> Catalog:
        return self._catalog()

    def _catalog(self) -> Catalog:
        if self.catalog is None:
            raise RuntimeError("backend not started")
        return self.catalog

    def home_of(self, sandbox_id: str) -> Path:
        """The default user's home, as the host sees it."""
        directory = self.sandboxes_dir / sandbox_id
        return directory / "root" / "home" / "user" if self.isolation else directory / "home"

    def find(self, sandbox_id: str, tenant: str) -> Live:
        return tenancy.find(self.live, sandbox_id, tenant, lambda e: e.sandbox.tenant)

    def _adopt(self, row: Row, process: Watched) -> None:
        """Serve again a sandbox the last lifecycle process left running (`adopting`)."""
        entry = Live(row, process)
        sandbox = entry.sandbox
        self.live[sandbox.sandbox_id] = entry
        if self.isolation is not None:
            self.isolation.networks.take(sandbox.endpoint_host)
        else:
            self.addresses.take(sandbox.endpoint_host)
        self.watch_exit(entry)
        if sandbox.state is State.RUNNING:
            self.reaper.schedule(sandbox.sandbox_id, sandbox.end_at)

    async def _remove_strays(self, adopted: set[str]) -> None:
        if self.isolation is not None:
            await asyncio.to_thread(self.isolation.remove_strays, adopted)

    def watch_exit(self, entry: Live) -> None:
        """End the sandbox if its current processes die on their own."""
        sandbox_id = entry.sandbox.sandbox_id
        process = entry.process
        if process.pid == NO_PROCESS:
            return  # paused to its files: nothing runs that could die

        def exited(_: asyncio.Future[None]) -> None:
            # A filesystem pause swaps the processes out before it ends them: not a death.
            if self.live.get(sandbox_id) is entry and entry.process is process:
                self._spawn_task(lambda: self._died(entry, process), f"lifecycle-died-{sandbox_id}")

        process.exited.add_done_callback(exited)

    async def _commit(
        self, entry: Live, sandbox: Sandbox, event: EventType, process: Watched | None = None
    ) -> Sandbox:
        """Store `sandbox` (and, if given, `process` as its processes' supervisor), then
        publish it."""
        row = replace(entry.row, sandbox=sandbox)
        if process is not None:
            row = replace(row, pid=process.pid, pid_start=process.ticks)
        await self.store.put(row)  # memory follows only what was committed (a full disk)
        entry.row = row
        self.hub.publish(event, sandbox)
        if sandbox.state is State.RUNNING:
            self.reaper.schedule(sandbox.sandbox_id, sandbox.end_at)
        return sandbox

    # -- starting sandboxes ---------------------------------------------------------------

    async def _launch(self, template: Template, env: dict[str, str]) -> Live:
        if not self._has_room():
            raise ResourceExhausted(
                f"this gateway runs at most {self.settings.max_sandboxes} sandboxes; "
                "kill one or raise --max-sandboxes"
            )
        sandbox_id = new_sandbox_id()
        token = access_token(self.seed, sandbox_id)
        env = {**template.env, **env}  # a built template's ENV, below the Create's own
        self._starting += 1
        try:
            async with self._start_slots:  # the ready timeout counts from the spawn
                with self.layers.pin(template.layers):
                    launch = await self._prepare(sandbox_id, token, template, env)
                try:
                    process = await self._start(launch)
                except BaseException:
                    await self.free(sandbox_id, launch.host)
                    raise
                finally:
                    if launch.userns_fd is not None:
                        os.close(launch.userns_fd)
                await self._prepare_template(sandbox_id, launch.host, token, template, process)
        finally:
            self._starting -= 1
        host = launch.host
        now = self.clock()
        sandbox = Sandbox(
            sandbox_id=sandbox_id, template_id=template.template_id, alias="", tenant="",
            metadata={}, env_vars=env, started_at=now, end_at=now, state=State.RUNNING,
            cpu_count=template.cpu_count, memory_mb=template.memory_mb,
            disk_size_mb=template.disk_size_mb, envd_version=template.envd_version,
            envd_access_token=token, endpoint_host=host,
        )  # fmt: skip
        return Live(Row(sandbox, process.pid, process.ticks, pooled=True), process)

    async def _prepare(
        self, sandbox_id: str, token: str, template: Template, env: dict[str, str]
    ) -> spawning.Launch:
        """Address, network, users, root filesystem and cgroups of a sandbox to start."""
        directory = self.sandboxes_dir / sandbox_id
        stack = data_stack.for_sandboxes(self.settings) if template.interpreter else None
        if self.isolation is None:
            host = self.addresses.allocate()
            for _ in range(16):
                if not await self.probe.in_use(host):
                    break
                host = self.addresses.allocate()  # the busy one stays marked as used
            else:
                raise ResourceExhausted("no free sandbox address found in 127.100.0.0/16")
            paths = mounting.SandboxRoot(directory, 0)
            return spawning.Launch(sandbox_id, token, host, paths, template.memory_mb, env,
                                   interpreter=template.interpreter,
                                   data_stack=stack)  # fmt: skip
        trees = self.layers.trees(template.layers)
        if stack is not None:  # a read-only layer under the template's own (data_stack.py)
            trees = (*trees, stack)
        if template.layers:
            layers.record_sandbox_layers(directory, template.layers)
        # Shielded: a cancelled Create must not leave a namespace or mount nobody knows of.
        confining = asyncio.ensure_future(
            asyncio.to_thread(self.isolation.confine, sandbox_id, template.memory_mb, trees)
        )
        try:
            confined = await asyncio.shield(confining)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                made = await confining
                os.close(made.userns_fd)
                await asyncio.to_thread(self.isolation.release, sandbox_id, made.link.address)
            raise
        return spawning.Launch(
            sandbox_id, token, confined.link.address, confined.paths, template.memory_mb, env,
            interpreter=template.interpreter, netns=confined.link.netns_path,
            userns_fd=confined.userns_fd, cgroups=confined.cgroups, data_stack=stack,
        )  # fmt: skip

    async def free(self, sandbox_id: str, host: str) -> None:
        """Free what `_prepare` took (idempotent; the processes must be gone)."""
        layered = (self.sandboxes_dir / sandbox_id / layers.SANDBOX_LAYERS_FILE).exists()
        if self.isolation is not None:
            await asyncio.to_thread(self.isolation.release, sandbox_id, host)
        else:
            self.addresses.release(host)
            await asyncio.to_thread(shutil.rmtree, self.sandboxes_dir / sandbox_id, True)
        if layered:
            await self.collect_layers()

    async def _prepare_template(
        self, sandbox_id: str, host: str, token: str, template: Template, process: Watched
    ) -> None:
        """A built template's user, workdir, start and ready commands (`template_start`);
        the sandbox is stopped and freed if they fail."""
        if not (template.user or template.workdir or template.start_cmd or template.ready_cmd):
            return
        try:
            await template_start.prepare(self.probe, host, token, template)
        except BaseException:
            await self._stop(sandbox_id, process)
            await self.free(sandbox_id, host)
            raise

    async def _start(self, launch: spawning.Launch) -> Watched:
        zygote = self.isolation.zygote if self.isolation else None
        process = await spawning.spawn(self.settings, launch, zygote)
        try:
            await self.probe.wait_ready(
                process, launch.host, self.settings.ready_timeout_s,
                launch.access_token if launch.interpreter else None,
            )  # fmt: skip
        except BaseException:
            # Also on cancellation (service stopping): wait for the exit, so that our child
            # is reaped rather than left running or a zombie.
            await wait_gone(process.kill(), _KILL_WAIT_S)
            await asyncio.wait([process.exited], timeout=_KILL_WAIT_S)
            process.close()
            inside = launch.paths.root / spawning.SERVER_LOG_INSIDE.lstrip("/")
            log.warning(
                "sandbox %s failed to start; its logs end with:\n%s%s",
                launch.sandbox_id, log_tail(launch.paths.log), log_tail(inside),
            )  # fmt: skip
            raise
        return process

    async def _warm(self, key: str) -> Live:
        template_id, _, build_id = key.partition("@")
        if build_id:
            template = self._catalog().at_build(template_id, build_id)
        else:
            template, _ = self._catalog().resolve(template_id, "")
        return await self._launch(template, {})

    async def _from_pool(self, template: Template, env: dict[str, str]) -> Live | None:
        pool = self.pools.get(_pool_key(template))
        entry = pool.take() if pool else None
        if entry is None:
            return None
        spawning.restore_priority(entry.process)  # it was started at a refill's priority
        body = json.dumps({"envVars": env}).encode()
        headers = {"X-Access-Token": entry.sandbox.envd_access_token,
                   "Content-Type": "application/json"}  # fmt: skip
        try:
            status = await self.probe.picod_status(
                entry.sandbox.endpoint_host, "POST", "/init", headers, body, 5.0
            )
        except (OSError, TimeoutError) as exc:
            status = 0
            log.warning("pooled sandbox %s refused /init: %s", entry.sandbox.sandbox_id, exc)
        if status // 100 != 2:
            await self._destroy(entry)
            return None
        return entry

    async def recorded_keys(self, since: float) -> list[RecordedKey]:
        return await self.store.load_idempotency_keys(since)

    async def keyed_sandbox(self, sandbox_id: str) -> Sandbox | None:
        """Live, or as it ended (E2B answers a retry with the same sandbox even once it is
        gone): its row stays in SQLite for the idempotency window (`_prune_ended`)."""
        current = self.live.get(sandbox_id)
        if current is not None:
            return current.sandbox
        row = await self.store.get(sandbox_id)
        if row is None:
            return None
        return replace(row.sandbox, envd_access_token=access_token(self.seed, sandbox_id))

    async def _prune_ended(self) -> None:
        """Drop the rows of sandboxes that ended before the idempotency window, hourly."""
        while True:
            await asyncio.sleep(_PRUNE_EVERY_S)
            await self.store.prune(self.clock() - IDEMPOTENCY_WINDOW_S)

    async def create(self, spec: CreateSpec) -> Sandbox:
        metadata = check_metadata(spec.metadata)
        env = check_env_vars(spec.env_vars)
        template, alias = self._catalog().resolve(spec.template, spec.tenant)
        if not template.available:
            raise Conflict(template.unavailable_reason or f"template {spec.template} unavailable")
        if template.layers and self.isolation is None:
            raise Conflict(f"template {spec.template!r} is built from filesystem layers, which "
                           "need sandbox isolation (--isolation namespaces)")  # fmt: skip
        held = sum(
            1 for e in self.live.values()
            if e.sandbox.tenant == spec.tenant and e.sandbox.state in (State.RUNNING, State.PAUSED)
        )  # fmt: skip
        reservation = self.volumes.reserve(spec.tenant, spec.volume_mounts) if (
            spec.volume_mounts) else None  # fmt: skip
        with self.admission.admit(spec, held), self._reserved(reservation):
            entry = await self._from_pool(template, env) or await self._launch(template, env)
            mounts = await self._attach_volumes(entry, reservation)
            now = self.clock()
            sandbox = replace(
                entry.sandbox, tenant=spec.tenant, alias=alias, metadata=metadata, env_vars=env,
                started_at=now, end_at=now + spec.timeout_s, on_timeout=spec.on_timeout,
                auto_resume=spec.auto_resume, secure=spec.secure,
                allow_internet_access=spec.allow_internet_access,
                idempotency_key=spec.idempotency_key,
                allow_public_traffic=spec.allow_public_traffic,
                timeout_pause_mode=spec.timeout_pause_mode, volume_mounts=mounts,
            )  # fmt: skip
            entry.row = replace(entry.row, pooled=False)
            if self.isolation is not None:
                await asyncio.to_thread(
                    self.isolation.allow_internet, sandbox.sandbox_id, sandbox.endpoint_host,
                    spec.allow_internet_access,
                )  # fmt: skip
            self.live[sandbox.sandbox_id] = entry
        self.watch_exit(entry)
        try:
            return await self._commit(entry, sandbox, EventType.CREATED)
        except BaseException:
            self.live.pop(sandbox.sandbox_id, None)
            await self._destroy(entry)
            raise

    # -- ending sandboxes -----------------------------------------------------------------

    async def stop_processes(self, sandbox_id: str, process: Watched) -> None:
        """Kill a supervisor and everything under it, and wait until they are gone."""
        await self._stop(sandbox_id, process)

    async def _stop(self, sandbox_id: str, process: Watched) -> None:
        """Kill a supervisor and everything under it, and wait until they are gone."""
        pids = process.kill()
        if not await wait_gone(pids, _KILL_WAIT_S):
            log.error("sandbox %s did not exit after SIGKILL", sandbox_id)
        # Our own supervisor is reaped when its pidfd fires; let that happen first.
        await asyncio.wait([process.exited], timeout=_KILL_WAIT_S)
        process.close()

    async def _destroy(self, entry: Live) -> None:
        """Kill the processes, free the address and the directory. Idempotent."""
        await self._stop(entry.sandbox.sandbox_id, entry.process)
        self.meter.forget(entry.sandbox.sandbox_id)
        await self.volumes.release(entry.sandbox.sandbox_id)
        await self.free(entry.sandbox.sandbox_id, entry.sandbox.endpoint_host)
        for pool in self.pools.values():
            pool.poke()

    async def _end(self, entry: Live, event: EventType, reason: str) -> None:
        sandbox_id = entry.sandbox.sandbox_id
        if self.live.get(sandbox_id) is not entry:
            return
        del self.live[sandbox_id]  # unroutable from here on
        await self._destroy(entry)
        ended = replace(entry.sandbox, state=State.ENDED, end_reason=reason, end_at=self.clock())
        await self._commit(entry, ended, event)

    async def _died(self, entry: Live, process: Watched) -> None:
        async with entry.lock:
            if entry.process is not process:
                return  # paused to its files meanwhile: stopped on purpose, not dead
            log.warning("sandbox %s died on its own", entry.sandbox.sandbox_id)
            await self._end(entry, EventType.DIED, "died")

    async def _expire(self, sandbox_id: str) -> None:
        entry = self.live.get(sandbox_id)
        if entry is None:
            return
        async with entry.lock:
            sandbox = entry.sandbox
            if sandbox.state is not State.RUNNING or sandbox.end_at > self.clock():
                return
            if sandbox.on_timeout is OnTimeout.PAUSE:
                await self._pause_locked(entry, sandbox.timeout_pause_mode)
            else:
                await self._end(entry, EventType.EXPIRED, "expired")

    async def kill(self, sandbox_id: str, tenant: str) -> None:
        entry = self.find(sandbox_id, tenant)
        async with entry.lock:
            await self._end(entry, EventType.KILLED, "killed")

    # -- reading --------------------------------------------------------------------------

    async def get(self, sandbox_id: str, tenant: str) -> Sandbox:
        return self.find(sandbox_id, tenant).sandbox

    def _template_ids(self, name: str) -> set[str]:
        try:
            return {self._catalog().resolve(name, "")[0].template_id}
        except NotFound:
            return set()

    async def list_sandboxes(self, query: ListQuery) -> Page:
        sandboxes = (e.sandbox for e in self.live.values())
        return listing.page(sandboxes, query, self._template_ids)

    def watch(self) -> AsyncIterator[Event]:
        return self.hub.watch(lambda: [e.sandbox for e in self.live.values()])

    async def metrics(
        self, sandbox_id: str, tenant: str, start: int | None = None, end: int | None = None
    ) -> list[Metric]:
        entry = self.find(sandbox_id, tenant)
        return await self.meter.series(self._metric_target(entry), start, end)

    def _metric_target(self, entry: Live) -> Target:
        directory = self.sandboxes_dir / entry.sandbox.sandbox_id
        return Target(
            sandbox=entry.sandbox, pid=entry.process.pid, pid_ticks=entry.process.ticks,
            cgroups=self.isolation.cgroups if self.isolation else None,
            layer=mounting.SandboxRoot(directory, 0).layer if self.isolation else None,
            home=directory / "home",
        )  # fmt: skip

    def _metric_target_of(self, sandbox_id: str) -> Target | None:
        entry = self.live.get(sandbox_id)
        return None if entry is None else self._metric_target(entry)

    def _running_targets(self) -> list[Target]:
        return [self._metric_target(e) for e in self.live.values()
                if e.sandbox.state is State.RUNNING]  # fmt: skip

    # -- timeouts, pause and resume -------------------------------------------------------

    @staticmethod
    def _require_unpaused(entry: Live) -> Sandbox:
        s = entry.sandbox
        if s.state is State.PAUSED:
            raise Conflict(f"sandbox {s.sandbox_id} is paused; connect to resume it first")
        return s

    async def set_timeout(self, sandbox_id: str, tenant: str, timeout_s: int) -> Sandbox:
        entry = self.find(sandbox_id, tenant)
        async with entry.lock:
            s = self._require_unpaused(entry)
            end_at = timeouts.set_end_at(
                self.clock(), s.started_at, timeout_s, self.settings.max_timeout_s
            )
            return await self._commit(entry, replace(s, end_at=end_at), EventType.UPDATED)

    async def refresh(self, sandbox_id: str, tenant: str, duration_s: int | None) -> Sandbox:
        entry = self.find(sandbox_id, tenant)
        async with entry.lock:
            self._require_unpaused(entry)
            return await self._extend(entry, duration_s)

    async def _extend(
        self, entry: Live, timeout_s: int | None, process: Watched | None = None
    ) -> Sandbox:
        s = entry.sandbox
        end_at = timeouts.extend_end_at(
            self.clock(), s.started_at, s.end_at, timeout_s, self.settings.max_timeout_s
        )
        if end_at == s.end_at and s.state is State.RUNNING:
            return s
        return await self._commit(
            entry, replace(s, end_at=end_at, state=State.RUNNING), EventType.UPDATED, process
        )

    async def _pause_locked(self, entry: Live, mode: PauseMode) -> Sandbox:
        s = entry.sandbox
        if s.state is State.PAUSED:
            raise Conflict(f"sandbox {s.sandbox_id} is already paused")
        paused = replace(s, state=State.PAUSED, pause_mode=mode)
        if mode is PauseMode.FILESYSTEM:
            return await self._pause_to_files(entry, paused)
        signal_tree(entry.process.pid, signal.SIGSTOP, self._depth)
        try:
            return await self._commit(entry, paused, EventType.UPDATED)
        except BaseException:
            signal_tree(entry.process.pid, signal.SIGCONT, self._depth)  # not paused after all
            raise

    async def _pause_to_files(self, entry: Live, paused: Sandbox) -> Sandbox:
        """End every process of the sandbox and keep its files (`relaunching`)."""
        # Committed before the kill: if the commit fails the sandbox runs on untouched, and
        # if this service dies after it the next start finds a row without processes and
        # kills the supervisor as a stray.
        none = Watched.absent()
        await self._commit(entry, paused, EventType.UPDATED, none)
        running, entry.process = entry.process, none  # swapped first: its exit is no death
        await self._stop(paused.sandbox_id, running)
        if self.isolation is not None:
            await asyncio.to_thread(self.isolation.cgroups.remove, paused.sandbox_id)
        return paused

    async def pause(
        self, sandbox_id: str, tenant: str, mode: PauseMode = PauseMode.FULL
    ) -> Sandbox:
        entry = self.find(sandbox_id, tenant)
        async with entry.lock:
            return await self._pause_locked(entry, mode)

    async def _resume_locked(self, entry: Live, timeout_s: int | None) -> Sandbox:
        s = entry.sandbox
        if s.pause_mode is not PauseMode.FILESYSTEM:
            signal_tree(entry.process.pid, signal.SIGCONT, self._depth)
            return await self._extend(entry, timeout_s)
        process = await self._relaunch(s)
        entry.process = process
        self.watch_exit(entry)
        try:
            await self._reattach_volumes(s, process)
            return await self._extend(entry, timeout_s, process)
        except BaseException:
            entry.process = Watched.absent()  # still paused to its files, as it was
            await self._stop(s.sandbox_id, process)
            raise

    async def _relaunch(self, sandbox: Sandbox) -> Watched:
        """Start a filesystem-paused sandbox's servers afresh; returns once they are ready."""
        try:
            template, _ = self._catalog().resolve(
                sandbox.alias or sandbox.template_id, sandbox.tenant
            )
        except (NotFound, Conflict):
            # Deleted since (its files are the sandbox's own, kept while it lives): the
            # servers start without the template's start settings.
            template = Template(sandbox.template_id)
        async with self._start_slots:
            launch = await relaunching.launch_of(
                sandbox, template, self.sandboxes_dir / sandbox.sandbox_id, self.isolation,
                self.settings.max_processes,
            )  # fmt: skip
            try:
                process = await self._start(launch)
            finally:
                if launch.userns_fd is not None:
                    os.close(launch.userns_fd)
            try:
                await template_start.prepare(
                    self.probe, launch.host, sandbox.envd_access_token, template
                )
            except BaseException:
                await self._stop(sandbox.sandbox_id, process)
                raise
            return process

    async def connect(
        self, sandbox_id: str, tenant: str, timeout_s: int | None
    ) -> tuple[Sandbox, bool]:
        entry = self.find(sandbox_id, tenant)
        async with entry.lock:
            if entry.sandbox.state is State.PAUSED:
                return await self._resume_locked(entry, timeout_s), True
            return await self._extend(entry, timeout_s), False

    async def resume(self, sandbox_id: str, tenant: str, timeout_s: int | None) -> Sandbox:
        entry = self.find(sandbox_id, tenant)
        async with entry.lock:
            if entry.sandbox.state is not State.PAUSED:
                raise Conflict(f"sandbox {sandbox_id} is not paused")
            return await self._resume_locked(entry, timeout_s)

    # -- templates ------------------------------------------------------------------------

    async def list_templates(self, tenant: str) -> list[Template]:
        return self._catalog().list(tenant)

    async def get_template(self, template: str, tenant: str) -> Template:
        return self._catalog().describe(template, tenant)

    async def create_template(self, tenant: str, template: Template) -> Template:
        return self._catalog().create(tenant, template)

    async def update_template(self, tenant: str, template_id: str, public: bool) -> Template:
        return self._catalog().update(tenant, template_id, public)

    async def delete_template(self, tenant: str, template_id: str) -> None:
        """Deleting is allowed while sandboxes or child templates use the template: its
        layers stay until the last user is gone (layers.py)."""
        removed = self._catalog().delete(tenant, template_id)
        self.builder.logs.remove(list(building.builds_of([removed])))
        await self.refresh_template_pools()
        await self.collect_layers()

    # -- template builds and snapshots ----------------------------------------------------

    async def collect_layers(self) -> None:
        """Remove the layers nothing uses any more (layers.py)."""
        referenced = self._catalog().layers_in_use()
        for directory in self.sandboxes_dir.iterdir():
            try:
                referenced.update(layers.sandbox_layers(directory))
            except Unavailable as error:  # which layers it uses is unknown: keep them all
                log.warning("not collecting layers: %s", error.message)
                return
        unused = self.layers.unused(referenced)
        if unused:
            log.info("removing %d unused filesystem layer(s)", len(unused))
            await asyncio.to_thread(self.layers.remove, unused)

    async def request_build(
        self, tenant: str, name: str, tags: list[str], cpu_count: int, memory_mb: int
    ) -> tuple[Template, Build]:
        return self.builder.request(tenant, name, tags, cpu_count, memory_mb)

    async def file_upload(self, tenant: str, template_id: str, files_hash: str) -> tuple[bool, str]:
        self._catalog().owned(tenant, template_id)
        present = self.uploads.present(tenant, files_hash)
        return present, self.uploads.link(tenant, files_hash, self.clock())

    async def start_build(
        self, tenant: str, template_id: str, build_id: str, spec: BuildSpec
    ) -> None:
        self.builder.start(tenant, template_id, build_id, spec)

    async def build_status(
        self, tenant: str, template_id: str, build_id: str, offset: int, limit: int, level: str
    ) -> tuple[Build, list[building.LogEntry]]:
        return self.builder.status(tenant, template_id, build_id, offset, limit, level)

    async def assign_tags(self, tenant: str, target: str, tags: list[str]) -> Build:
        return self._catalog().assign_tags(tenant, target, tags)

    async def remove_tags(self, tenant: str, name: str, tags: list[str]) -> None:
        self._catalog().remove_tags(tenant, name, tags)
        await self.collect_layers()

    async def create_snapshot(self, tenant: str, sandbox_id: str, name: str) -> Template:
        return await snapshots.create(self, self.find(sandbox_id, tenant), tenant, name)

    async def list_snapshots(self, tenant: str, sandbox_id: str, name: str) -> list[Template]:
        return snapshots.listed(self._catalog(), tenant, sandbox_id, name)

    async def fork(
        self, tenant: str, sandbox_id: str, count: int, timeout_s: int
    ) -> list[Sandbox | DomainError]:
        return await snapshots.fork(self, self.find(sandbox_id, tenant), tenant, count, timeout_s)

    # -- volumes --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _reserved(self, reservation: Reservation | None) -> Iterator[None]:
        """Hold a Create's volumes against deletion until they are attached (or it fails)."""
        try:
            yield
        finally:
            if reservation is not None:
                self.volumes.cancel(reservation)

    def _uid_base(self, sandbox: Sandbox) -> int:
        if self.isolation is None:
            raise RuntimeError("volumes need isolation")  # LocalVolumes refused already
        return self.isolation.paths(sandbox.sandbox_id, sandbox.endpoint_host).uid_base

    async def _attach_volumes(
        self, entry: Live, reservation: Reservation | None
    ) -> tuple[VolumeMount, ...]:
        """Mount a Create's volumes into its (running, not yet handed out) sandbox; a
        sandbox that cannot have them is destroyed."""
        if reservation is None:
            return ()
        sandbox = entry.sandbox
        try:
            supervisor = (entry.process.pid, entry.process.ticks)
            return await self.volumes.attach(
                reservation, sandbox.sandbox_id, supervisor, self._uid_base(sandbox)
            )
        except BaseException:
            await self._destroy(entry)
            raise

    async def _reattach_volumes(self, sandbox: Sandbox, process: Watched) -> None:
        if sandbox.volume_mounts:
            await self.volumes.reattach(
                sandbox.sandbox_id, (process.pid, process.ticks), self._uid_base(sandbox)
            )

    async def create_volume(self, tenant: str, name: str) -> Volume:
        return await self.volumes.create(tenant, name)

    async def list_volumes(self, tenant: str) -> list[Volume]:
        return self.volumes.owned(tenant)

    async def get_volume(self, tenant: str, volume_id: str) -> Volume:
        return self.volumes.get(tenant, volume_id)

    async def delete_volume(self, tenant: str, volume_id: str) -> None:
        await self.volumes.delete(tenant, volume_id)
