"""How one sample of a local sandbox's CPU, memory and disk is read.

The meter (`measuring`) reads every running sandbox every few seconds, so each figure comes
from a place that costs O(1) per sandbox, or one pass over /proc for all of them:
- CPU %: CPU time since the sandbox's previous sample, over wall time and the template's
  CPU count; the first sample counts from the start of the sandbox's supervisor. CPU time is
  the cgroup's (v2 `cpu.stat`: every process the sandbox ran, living or gone) where there is
  one, else the process tree's utime+stime plus cutime+cstime (the children it reaped, so a
  command that ran and exited between two samples still counts), from one pass over /proc
  per read however many sandboxes it covers.
- Memory: with a memory cgroup (isolation), used = the cgroup's charge minus its page cache,
  and cache = that page cache (`limits.Cgroups.memory_bytes`). Without one, used is the
  tree's summed RSS (pages shared between processes counted once per process: an
  over-estimate) and cache is 0: no per-sandbox page-cache figure exists.
- Disk: with isolation, what the writable layer's own ext4 reports used (statvfs, O(1); it
  shrinks when files are deleted, which the sparse image's allocated blocks would not).
  Without, the size of the sandbox's home, walked with a file cap, at most every
  `DISK_WALK_EVERY_S` per sandbox and reused in between.

A `Reader` keeps per-sandbox state (the previous CPU reading, the last disk walk); its owner
calls it from one thread only, so that state needs no lock.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from extproc.lifecycle.limits import Cgroups
from extproc.lifecycle.sandboxes import Metric, Sandbox

log = logging.getLogger(__name__)

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
_MAX_FILES = 100_000
# A home of 100 000 files takes ~0.6 s of CPU to walk: not every 5 s for every sandbox.
DISK_WALK_EVERY_S = 30.0


@dataclass(frozen=True)
class Target:
    """What one sample of a sandbox reads."""

    sandbox: Sandbox
    # The supervisor: the top of the sandbox's process tree, and its start in clock ticks
    # since boot (the first sample's CPU baseline).
    pid: int
    pid_ticks: int
    # The host's cgroup layout (isolation); None without isolation.
    cgroups: Cgroups | None
    # The mounted writable layer (isolation), else None and `home` is walked.
    layer: Path | None
    home: Path


class _ProcessTable:
    """One pass over /proc: each process's children, CPU ticks and RSS."""

    def __init__(self) -> None:
        self.children: dict[int, list[int]] = {}
        self.usage: dict[int, tuple[int, int]] = {}
        for name in os.listdir("/proc"):  # noqa: PTH208 (no Path per process: a hot loop)
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat", "rb") as stat:  # noqa: PTH123 (hot loop)
                    raw = stat.read()
                fields = raw[raw.rindex(b")") + 2 :].split()
                ticks = int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
                usage = ticks, int(fields[21]) * _PAGE
                parent = int(fields[1])
            except (OSError, ValueError, IndexError):
                continue  # exited between listing and reading
            pid = int(name)
            self.usage[pid] = usage
            self.children.setdefault(parent, []).append(pid)

    def tree_usage(self, pid: int) -> tuple[float, int]:
        """(CPU seconds, RSS bytes) of `pid` and its descendants."""
        ticks = rss = 0
        stack = [pid]
        while stack:
            current = stack.pop()
            own_ticks, own_rss = self.usage.get(current, (0, 0))
            ticks += own_ticks
            rss += own_rss
            stack.extend(self.children.get(current, ()))
        return ticks / _TICKS, rss


def _uptime() -> float:
    with open("/proc/uptime", encoding="ascii") as uptime:  # noqa: PTH123
        return float(uptime.read().split()[0])


def _layer_used(layer: Path) -> int:
    # Unmounted, the directory would report the host's own filesystem.
    if not os.path.ismount(layer):
        return 0
    stat = os.statvfs(layer)
    return (stat.f_blocks - stat.f_bfree) * stat.f_frsize


def walk_size(home: Path) -> int:
    """Bytes allocated to the files under `home`, counting at most `_MAX_FILES` files."""
    total = files = 0
    for root, _dirs, names in os.walk(home):
        for name in names:
            files += 1
            if files > _MAX_FILES:
                return total
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512  # noqa: PTH118
            except OSError:
                continue
    return total


class Reader:
    def __init__(self) -> None:
        # sandbox id -> (CPU seconds, when) of its previous sample
        self._cpu: dict[str, tuple[float, float]] = {}
        # sandbox id -> (bytes, when) of its last walk of the home
        self._walked: dict[str, tuple[int, float]] = {}

    def forget(self, sandbox_id: str) -> None:
        self._cpu.pop(sandbox_id, None)
        self._walked.pop(sandbox_id, None)

    def read(self, targets: Sequence[Target], now: float) -> dict[str, Metric]:
        """A sample of each target taken at `now`; a target that cannot be read is left
        out (it is ending, or its files are going) and logged at debug."""
        table: _ProcessTable | None = None
        uptime = _uptime()
        samples = {}
        for target in targets:
            sandbox_id = target.sandbox.sandbox_id
            try:
                cgroups = target.cgroups
                cpu = cgroups.cpu_seconds(sandbox_id) if cgroups else None
                memory = cgroups.memory_bytes(sandbox_id) if cgroups else None
                if cpu is None or memory is None:
                    table = table or _ProcessTable()
                    tree_cpu, rss = table.tree_usage(target.pid)
                    cpu = tree_cpu if cpu is None else cpu
                    memory = (rss, 0) if memory is None else memory
                started = now - max(uptime - target.pid_ticks / _TICKS, 0.0)
                samples[sandbox_id] = self._metric(target, now, started, cpu, memory)
            except (OSError, ValueError) as error:
                log.debug("no metrics sample of sandbox %s: %s", sandbox_id, error)
        return samples

    def _metric(
        self, target: Target, now: float, started: float, cpu: float, memory: tuple[int, int]
    ) -> Metric:
        sandbox = target.sandbox
        previous_cpu, previous_time = self._cpu.get(sandbox.sandbox_id, (0.0, started))
        self._cpu[sandbox.sandbox_id] = (cpu, now)
        elapsed = max(now - previous_time, 1e-3)
        cpus = max(sandbox.cpu_count, 1)
        # A process of the tree that exits unreaped takes its CPU time with it: never < 0.
        pct = 100.0 * max(cpu - previous_cpu, 0.0) / elapsed / cpus
        used, cache = memory
        return Metric(
            timestamp=now,
            cpu_count=sandbox.cpu_count,
            cpu_used_pct=round(min(pct, 100.0), 2),
            mem_used=used,
            mem_total=sandbox.memory_mb * 1024 * 1024,
            mem_cache=cache,
            disk_used=self._disk_used(target, now),
            disk_total=sandbox.disk_size_mb * 1024 * 1024,
        )

    def _disk_used(self, target: Target, now: float) -> int:
        if target.layer is not None:
            return _layer_used(target.layer)
        sandbox_id = target.sandbox.sandbox_id
        walked = self._walked.get(sandbox_id)
        if walked is None or now - walked[1] >= DISK_WALK_EVERY_S:
            walked = walk_size(target.home), now
            self._walked[sandbox_id] = walked
        return walked[0]
