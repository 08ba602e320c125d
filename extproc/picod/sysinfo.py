"""GET /metrics: envd's snake_case machine metrics, read from the memory cgroup, /proc and
statvfs.

CPU use is the busy share of all CPUs since the previous reading of the same
`SystemMetrics` (gopsutil's `cpu.Percent(0)`, which envd uses); the first reading measures
since it was made, or since boot for one that reads at once (a span of a jiffy or two would
say 0 or 100%).

Memory is the container's where its memory cgroup is readable: in a pod /proc/meminfo shows
the node, not the sandbox. used = the cgroup's charge minus its page cache and cache = that
page cache (v2 `memory.current` and `memory.stat` `file`; v1 `memory.usage_in_bytes` and
`total_cache`, else `cache`), as E2B separates memUsed from memCache and as the lifecycle
service reads a local sandbox's group; total = the group's limit when it has one below the
machine's memory. Without a readable group, memory follows gopsutil: used = total - free -
buffers - cached - sreclaimable, and cache = Cached.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from extproc.core.kernel_files import stat_fields

MIB = 1024 * 1024
CGROUP_MOUNT = Path("/sys/fs/cgroup")
CGROUP_MEMBERSHIP = Path("/proc/self/cgroup")


class Sample(NamedTuple):
    """One reading; `as_json` is the object GET /metrics answers."""

    ts: int  # whole unix seconds
    cpu_count: int
    cpu_used_pct: float
    mem_total: int  # bytes, as the other mem_* and disk_*
    mem_used: int
    mem_cache: int
    disk_used: int
    disk_total: int

    def as_json(self) -> dict[str, Any]:
        return {
            "ts": self.ts,
            "cpu_count": self.cpu_count,
            "cpu_used_pct": self.cpu_used_pct,
            "mem_total": self.mem_total,
            "mem_used": self.mem_used,
            "mem_cache": self.mem_cache,
            "mem_total_mib": self.mem_total // MIB,
            "mem_used_mib": self.mem_used // MIB,
            "disk_used": self.disk_used,
            "disk_total": self.disk_total,
        }


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs."""
    with Path("/proc/stat").open() as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user/nice
    return total - idle, total


def _meminfo() -> dict[str, int]:
    values: dict[str, int] = {}
    with Path("/proc/meminfo").open() as f:
        for line in f:
            name, _, rest = line.partition(":")
            values[name] = int(rest.split()[0]) * 1024
    return values


@dataclass(frozen=True)
class MemoryCgroup:
    """The memory cgroup of this process: the files one reading takes."""

    usage: Path  # the charge, page cache included
    stat: Path
    limit: Path  # a number of bytes, or "max" (v2) / a huge number (v1) for none
    cache_keys: tuple[str, ...]  # memory.stat's page-cache field, first present wins

    @classmethod
    def of_this_process(cls) -> MemoryCgroup | None:
        try:
            membership = CGROUP_MEMBERSHIP.read_text()
        except OSError:
            return None
        return cls.find(CGROUP_MOUNT, membership)

    @classmethod
    def find(cls, mount: Path, membership: str) -> MemoryCgroup | None:
        """The group `membership` (a /proc/<pid>/cgroup text) names under the cgroupfs at
        `mount`, v2 first; None when none has readable memory accounting.

        Inside a cgroup namespace, as in most pods, the group is the mount's root and the
        membership says `/`; without one the group is its path under the mount, unless the
        runtime mounted the container's own group at the root (Docker on v1 does).
        """
        cache_keys: tuple[str, ...]
        if (mount / "cgroup.controllers").exists():
            usage, stat, limit = "memory.current", "memory.stat", "memory.max"
            cache_keys = ("file",)
            paths = [path for _, controllers, path in _lines(membership) if controllers == ""]
            under = mount
        else:
            usage, stat, limit = "memory.usage_in_bytes", "memory.stat", "memory.limit_in_bytes"
            cache_keys = ("total_cache", "cache")  # total_: child groups' too
            paths = [path for _, controllers, path in _lines(membership)
                     if "memory" in controllers.split(",")]  # fmt: skip
            under = mount / "memory"
        for directory in [under / p.lstrip("/") for p in paths[:1]] + [under]:
            if os.access(directory / usage, os.R_OK) and os.access(directory / stat, os.R_OK):
                return cls(directory / usage, directory / stat, directory / limit, cache_keys)
        return None

    def read(self) -> tuple[int, int, int | None]:
        """(charge, page cache, limit or None) in bytes; OSError or ValueError when the
        files cannot be read or parsed."""
        charged = int(self.usage.read_text())
        stat = stat_fields(self.stat.read_text())
        cache = next((stat[key] for key in self.cache_keys if key in stat), 0)
        try:
            raw_limit = self.limit.read_text().strip()
        except OSError:
            raw_limit = "max"
        return charged, cache, None if raw_limit == "max" else int(raw_limit)


def _lines(membership: str) -> list[tuple[str, str, str]]:
    """/proc/<pid>/cgroup's `id:controllers:path` lines."""
    lines = []
    for line in membership.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if path:
            lines.append((hierarchy, controllers, path))
    return lines


class SystemMetrics:
    """Readings of this machine (or container); each keeps its own CPU baseline."""

    def __init__(
        self, disk_path: Path, cgroup: MemoryCgroup | None, *, cpu_since_boot: bool = False
    ) -> None:
        self._disk_path = disk_path
        self._cgroup = cgroup
        self._last = (0, 0) if cpu_since_boot else _cpu_times()

    def read(self) -> Sample:
        busy, total = _cpu_times()
        last_busy, last_total = self._last
        self._last = (busy, total)
        span = total - last_total
        cpu_pct = round(100.0 * (busy - last_busy) / span, 2) if span > 0 else 0.0
        mem_total, mem_used, mem_cache = self._memory()
        disk = os.statvfs(self._disk_path)
        return Sample(
            ts=int(time.time()),
            cpu_count=len(os.sched_getaffinity(0)),
            cpu_used_pct=cpu_pct,
            mem_total=mem_total,
            mem_used=mem_used,
            mem_cache=mem_cache,
            disk_used=(disk.f_blocks - disk.f_bfree) * disk.f_frsize,
            disk_total=disk.f_blocks * disk.f_frsize,
        )

    def snapshot(self) -> dict[str, Any]:
        return self.read().as_json()

    def _memory(self) -> tuple[int, int, int]:
        """(total, used, cache) bytes."""
        mem = _meminfo()
        machine = mem.get("MemTotal", 0)
        if self._cgroup is not None:
            try:
                charged, cache, limit = self._cgroup.read()
            except (OSError, ValueError):
                pass  # the group went away or is unreadable now: the machine's figures
            else:
                # v1's charge is batched per CPU and may lag the exact cache figure a little.
                total = machine if limit is None else min(limit, machine)
                return total, max(charged - cache, 0), cache
        cached = mem.get("Cached", 0)
        used = machine - mem.get("MemFree", 0) - mem.get("Buffers", 0) - cached
        return machine, used - mem.get("SReclaimable", 0), cached
