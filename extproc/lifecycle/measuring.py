"""GetSandboxMetrics for local sandboxes, read from /proc; no history is kept.

Each call returns one sample "now". CPU % is the tree's CPU time since the previous sample of
the same sandbox (or since it started, for the first), over wall time and the template's
CPU count. Memory is the summed RSS of the tree (so shared pages count once per process:
an over-estimate); mem_cache is 0 because without a cgroup there is no per-sandbox page
cache figure. Disk used is the size of the sandbox's home, walked with a file cap.
"""

from __future__ import annotations

import os
from pathlib import Path

from extproc.lifecycle.processes import tree
from extproc.lifecycle.sandboxes import Metric, Sandbox

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
_MAX_FILES = 100_000


def _cpu_and_rss(pid: int) -> tuple[int, int]:
    ticks = rss = 0
    for p in tree(pid):
        try:
            stat = Path(f"/proc/{p}/stat").read_text(encoding="ascii", errors="replace")
            fields = stat[stat.rindex(")") + 2 :].split()
            ticks += int(fields[11]) + int(fields[12])  # utime + stime
            rss += int(fields[21]) * _PAGE
        except (OSError, ValueError, IndexError):
            continue  # exited between listing and reading
    return ticks, rss


def disk_used(home: Path) -> int:
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


class Meter:
    def __init__(self) -> None:
        self._last: dict[str, tuple[int, float]] = {}

    def forget(self, sandbox_id: str) -> None:
        self._last.pop(sandbox_id, None)

    def sample(self, sandbox: Sandbox, pid: int, home: Path, now: float) -> Metric:
        ticks, rss = _cpu_and_rss(pid)
        prev_ticks, prev_time = self._last.get(sandbox.sandbox_id, (0, sandbox.started_at))
        self._last[sandbox.sandbox_id] = (ticks, now)
        elapsed = max(now - prev_time, 1e-3)
        cpus = max(sandbox.cpu_count, 1)
        pct = 100.0 * (max(ticks - prev_ticks, 0) / _TICKS) / elapsed / cpus
        return Metric(
            timestamp=now,
            cpu_count=sandbox.cpu_count,
            cpu_used_pct=round(min(pct, 100.0), 2),
            mem_used=rss,
            mem_total=sandbox.memory_mb * 1024 * 1024,
            mem_cache=0,
            disk_used=disk_used(home),
            disk_total=sandbox.disk_size_mb * 1024 * 1024,
        )
