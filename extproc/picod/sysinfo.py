"""GET /metrics: envd's snake_case machine metrics, read from /proc and statvfs.

CPU use is the busy share of all CPUs since the previous call (gopsutil's
`cpu.Percent(0)`, which envd uses); the first call measures since picod started.
Memory `used` follows gopsutil: total - free - buffers - cached - sreclaimable.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

MIB = 1024 * 1024


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


class SystemMetrics:
    def __init__(self, disk_path: Path) -> None:
        self._disk_path = disk_path
        self._last = _cpu_times()

    def snapshot(self) -> dict[str, Any]:
        busy, total = _cpu_times()
        last_busy, last_total = self._last
        self._last = (busy, total)
        span = total - last_total
        cpu_pct = round(100.0 * (busy - last_busy) / span, 2) if span > 0 else 0.0
        mem = _meminfo()
        mem_total = mem.get("MemTotal", 0)
        cached = mem.get("Cached", 0)
        used = (
            mem_total
            - mem.get("MemFree", 0)
            - mem.get("Buffers", 0)
            - cached
            - mem.get("SReclaimable", 0)
        )
        disk = os.statvfs(self._disk_path)
        return {
            "ts": int(time.time()),
            "cpu_count": len(os.sched_getaffinity(0)),
            "cpu_used_pct": cpu_pct,
            "mem_total": mem_total,
            "mem_used": used,
            "mem_cache": cached,
            "mem_total_mib": mem_total // MIB,
            "mem_used_mib": used // MIB,
            "disk_used": (disk.f_blocks - disk.f_bfree) * disk.f_frsize,
            "disk_total": disk.f_blocks * disk.f_frsize,
        }
