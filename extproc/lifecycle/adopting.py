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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

from extproc.lifecycle.processes import Watched, is_alive, kill_group, scan_supervisors, start_ticks
from extproc.lifecycle.sandboxes import PauseMode, Sandbox, State
from extproc.lifecycle.store import Row, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recovery:
    """What recovery reads and calls, handed in by the backend."""

    store: Store
    sandboxes_dir: Path  # a directory per sandbox, named by its id
    marker: str  # in the command line of every supervisor of this state dir (`spawning`)
    clock: Callable[[], float]
    token_of: Callable[[str], str]  # a sandbox id's access token (tokens are not stored)
    is_healthy: Callable[[str], Awaitable[bool]]  # picod at this address answers /health
    files_kept: Callable[[Sandbox], bool]  # a filesystem pause's files are there (`relaunching`)
    adopt: Callable[[Row, Watched], None]  # serve it again: index, address, exit watch, reaper
    free: Callable[[str, str], Awaitable[None]]  # (id, address): what a start took
    remove_strays: Callable[[set[str]], Awaitable[None]]  # isolation's leftovers but these


def _paused_to_files(row: Row) -> bool:
    return row.sandbox.state is State.PAUSED and row.sandbox.pause_mode is PauseMode.FILESYSTEM


async def _alive(recovery: Recovery, row: Row) -> bool:
    if row.pooled:
        return False
    if _paused_to_files(row):
        kept = recovery.files_kept(row.sandbox)
        if not kept:
            log.warning("sandbox %s was paused to its files, which are gone: it ends",
                        row.sandbox.sandbox_id)  # fmt: skip
        return kept
    if not is_alive(row.pid, row.pid_start):
        return False
    if row.sandbox.state is not State.PAUSED:
        healthy = await recovery.is_healthy(row.sandbox.endpoint_host)
        if not healthy:
            log.warning("sandbox %s runs but its /health is late; adopting it anyway",
                        row.sandbox.sandbox_id)  # fmt: skip
    return True


async def recover(recovery: Recovery) -> None:
    started = time.monotonic()
    rows = await recovery.store.load_live()
    verdicts = await asyncio.gather(*(_alive(recovery, r) for r in rows))
    adopted: dict[str, int] = {}  # id -> supervisor pid
    ended = 0
    for row, alive in zip(rows, verdicts, strict=True):
        sandbox = replace(row.sandbox, envd_access_token=recovery.token_of(row.sandbox.sandbox_id))
        if alive:
            if _paused_to_files(row):
                # No process (a crash mid-pause may have left one: killed below as a stray).
                process = Watched.absent()
            else:
                process = Watched(row.pid, row.pid_start, None)
            recovery.adopt(replace(row, sandbox=sandbox), process)
            adopted[sandbox.sandbox_id] = process.pid
            continue
        kill_group(row.pid, row.pid_start)  # a no-op for NO_PROCESS
        ended += 1
        gone = replace(sandbox, state=State.ENDED, end_reason="died", end_at=recovery.clock())
        await recovery.store.put(replace(row, sandbox=gone))
    keep = set(adopted.values())
    strays = [pid for pid in scan_supervisors(recovery.marker) if pid not in keep]
    for pid in strays:
        ticks = start_ticks(pid)
        if ticks is not None:
            kill_group(pid, ticks)
    ended_rows = {r.sandbox.sandbox_id: r.sandbox.endpoint_host for r in rows}
    for path in recovery.sandboxes_dir.iterdir():
        if path.name not in adopted:
            await recovery.free(path.name, ended_rows.get(path.name, ""))
    await recovery.remove_strays(set(adopted))
    log.info(
        "recovered state in %.0f ms: %d sandboxes adopted, %d ended, %d stray processes killed",
        (time.monotonic() - started) * 1000, len(adopted), ended, len(strays),
    )  # fmt: skip
