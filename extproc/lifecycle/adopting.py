"""Re-adoption after a restart: what the last lifecycle process left running.

The rule that keeps both promises ("a restarted service serves every live sandbox" and
"nothing leaks"): a sandbox is adopted only if SQLite has a live row for it, its supervisor
pid still runs with the recorded start time, and its picod answers /health (a paused one is
stopped and cannot answer, so for it the live process is enough). A sandbox paused to its
filesystem has no process by design: it is adopted when the files it resumes on are still
there (`relaunching.files_kept`), and nothing of it is watched until a resume starts it.
Everything else is killed:
rows whose processes are gone become ENDED ("died"), and any supervisor carrying this state
dir's marker without an adopted row (warm-pool sandboxes, a crash between spawn and commit)
is killed by process group. The mounts, network namespaces and cgroups of sandboxes not
adopted are removed with their directories.

"Merely slow" is not "dead": a sandbox whose processes run is adopted even when its /health
is late under load (it gets several seconds, then the live process is enough).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from extproc.core.tokens import access_token
from extproc.lifecycle import relaunching, spawning
from extproc.lifecycle.processes import (
    Watched,
    is_alive,
    kill_group,
    scan_supervisors,
    start_ticks,
)  # fmt: skip
from extproc.lifecycle.sandboxes import PauseMode, State
from extproc.lifecycle.store import Row

if TYPE_CHECKING:
    from extproc.lifecycle.local import LocalBackend

log = logging.getLogger(__name__)


def _paused_to_files(row: Row) -> bool:
    return row.sandbox.state is State.PAUSED and row.sandbox.pause_mode is PauseMode.FILESYSTEM


async def _alive(backend: LocalBackend, row: Row) -> bool:
    if row.pooled:
        return False
    if _paused_to_files(row):
        kept = relaunching.files_kept(backend, row.sandbox)
        if not kept:
            log.warning("sandbox %s was paused to its files, which are gone: it ends",
                        row.sandbox.sandbox_id)  # fmt: skip
        return kept
    if not is_alive(row.pid, row.pid_start):
        return False
    if row.sandbox.state is not State.PAUSED:
        healthy = await backend.probe.is_healthy(row.sandbox.endpoint_host, limit_s=5.0)
        if not healthy:
            log.warning("sandbox %s runs but its /health is late; adopting it anyway",
                        row.sandbox.sandbox_id)  # fmt: skip
    return True


async def recover(backend: LocalBackend) -> None:
    from extproc.lifecycle.local import Live  # the backend module imports this one

    started = time.monotonic()
    rows = await backend.store.load_live()
    verdicts = await asyncio.gather(*(_alive(backend, r) for r in rows))
    adopted, ended = 0, 0
    for row, alive in zip(rows, verdicts, strict=True):
        token = access_token(backend.seed, row.sandbox.sandbox_id)
        sandbox = replace(row.sandbox, envd_access_token=token)
        if alive:
            if _paused_to_files(row):
                # No process (a crash mid-pause may have left one: killed below as a stray).
                process = Watched.absent()
            else:
                process = Watched(row.pid, row.pid_start, None)
            entry = Live(replace(row, sandbox=sandbox), process)
            backend.live[sandbox.sandbox_id] = entry
            if backend.isolation is not None:
                backend.isolation.networks.take(sandbox.endpoint_host)
            else:
                backend.addresses.take(sandbox.endpoint_host)
            backend.watch_exit(entry)
            if sandbox.state is State.RUNNING:
                backend.reaper.schedule(sandbox.sandbox_id, sandbox.end_at)
            adopted += 1
            continue
        kill_group(row.pid, row.pid_start)  # a no-op for NO_PROCESS
        ended += 1
        gone = replace(sandbox, state=State.ENDED, end_reason="died", end_at=backend.clock())
        await backend.store.put(replace(row, sandbox=gone))
    keep = {e.process.pid for e in backend.live.values()}
    marker = spawning.marker(backend.settings, "")
    strays = [pid for pid in scan_supervisors(marker) if pid not in keep]
    for pid in strays:
        ticks = start_ticks(pid)
        if ticks is not None:
            kill_group(pid, ticks)
    ended_rows = {r.sandbox.sandbox_id: r.sandbox.endpoint_host for r in rows}
    for path in backend.sandboxes_dir.iterdir():
        if path.name not in backend.live:
            await backend.free(path.name, ended_rows.get(path.name, ""))
    if backend.isolation is not None:
        await asyncio.to_thread(backend.isolation.remove_strays, set(backend.live))
    log.info(
        "recovered state in %.0f ms: %d sandboxes adopted, %d ended, %d stray processes killed",
        (time.monotonic() - started) * 1000, adopted, ended, len(strays),
    )  # fmt: skip
