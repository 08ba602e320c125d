"""Per-sandbox limits on processes and memory: cgroup v2, else v1, else rlimits.

The sandbox's supervisor joins its cgroups before it starts anything (it writes its own pid
into each `cgroup.procs` file named here), so every process of the sandbox is counted from
the first. Where no cgroup controller is writable, the supervisor's `ulimit -u` (processes
per host uid, and each sandbox's ids are host ids of its own) and `ulimit -v` (address
space per process) still bound a fork storm and a memory hog.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from extproc.core.kernel_files import read_kernel_file, stat_fields

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class Cgroups:
    """The cgroup layout this host offers, and the group all our sandboxes live under."""

    # "v2", "v1" or "none"
    mode: str
    group: str
    # With v1: the hierarchies each sandbox gets a group in. pids and memory limit it;
    # cpuacct, where it is writable, counts its CPU for the metrics, which would otherwise
    # walk every process of the host for it (readings.py).
    v1_controllers: tuple[str, ...] = ("pids", "memory")

    @classmethod
    def detect(cls, group: str) -> Cgroups:
        unified = CGROUP_ROOT / "cgroup.controllers"
        if unified.exists():
            wanted = {"pids", "memory"}
            have = set(unified.read_text().split())
            if wanted <= have and os.access(CGROUP_ROOT, os.W_OK):
                return cls("v2", group)
        elif all(os.access(CGROUP_ROOT / c, os.W_OK) for c in ("pids", "memory")):
            accounting = ("cpuacct",) if os.access(CGROUP_ROOT / "cpuacct", os.W_OK) else ()
            return cls("v1", group, ("pids", "memory", *accounting))
        log.warning(
            "no writable cgroup pids/memory controllers: sandboxes are limited by rlimits "
            "only (processes per sandbox uid, address space per process)"
        )
        return cls("none", group)

    def _dirs(self, sandbox_id: str) -> list[Path]:
        if self.mode == "v2":
            return [CGROUP_ROOT / self.group / sandbox_id]
        if self.mode == "v1":
            return [CGROUP_ROOT / c / self.group / sandbox_id for c in self.v1_controllers]
        return []

    def prepare(self, sandbox_id: str, memory_mb: int, max_processes: int) -> list[Path]:
        """Create the sandbox's groups with their limits; the `cgroup.procs` files to join."""
        memory = str(memory_mb * 1024 * 1024)
        if self.mode == "v2":
            parent = CGROUP_ROOT / self.group
            parent.mkdir(exist_ok=True)
            with contextlib.suppress(OSError):
                (CGROUP_ROOT / "cgroup.subtree_control").write_text("+pids +memory")
            with contextlib.suppress(OSError):
                (parent / "cgroup.subtree_control").write_text("+pids +memory")
        procs = []
        for directory in self._dirs(sandbox_id):
            directory.mkdir(parents=True, exist_ok=True)
            if self.mode == "v2":
                (directory / "pids.max").write_text(str(max_processes))
                (directory / "memory.max").write_text(memory)
                with contextlib.suppress(OSError):
                    (directory / "memory.swap.max").write_text("0")
            elif directory.parent.parent.name == "pids":
                (directory / "pids.max").write_text(str(max_processes))
            elif directory.parent.parent.name == "memory":
                (directory / "memory.limit_in_bytes").write_text(memory)
            procs.append(directory / "cgroup.procs")
        return procs

    def remove(self, sandbox_id: str) -> None:
        for directory in self._dirs(sandbox_id):
            with contextlib.suppress(OSError):
                directory.rmdir()  # fails while a process is still in it; the reaper retries

    def remove_group(self) -> None:
        """Remove the (empty) parent group of this service's sandboxes."""
        parents = {d.parent for d in self._dirs("-")}
        for directory in parents:
            with contextlib.suppress(OSError):
                directory.rmdir()

    def memory_bytes(self, sandbox_id: str) -> tuple[int, int] | None:
        """(used, cache) bytes of the sandbox's memory cgroup, or None without one.

        `cache` is the page cache charged to the sandbox (v2 `file`; v1 `total_cache`, which
        counts child groups too, else `cache`) and `used` is the rest of the charge: what its
        processes hold, as E2B separates memUsed from memCache.
        """
        for directory in self._dirs(sandbox_id):
            try:
                if self.mode == "v2":
                    charged = int(read_kernel_file(directory / "memory.current"))
                    stat = stat_fields(read_kernel_file(directory / "memory.stat"))
                    cache = stat.get("file", 0)
                elif directory.parent.parent.name == "memory":
                    charged = int(read_kernel_file(directory / "memory.usage_in_bytes"))
                    stat = stat_fields(read_kernel_file(directory / "memory.stat"))
                    cache = stat.get("total_cache", stat.get("cache", 0))
                else:
                    continue
            except (OSError, ValueError):
                return None
            # v1's usage is batched per CPU and may lag the exact cache figure a little.
            return max(charged - cache, 0), cache
        return None

    def cpu_seconds(self, sandbox_id: str) -> float | None:
        """CPU time of every process the sandbox has run, living or gone (v2 `cpu.stat`,
        kept by every v2 group; v1 `cpuacct.usage` where that hierarchy is writable), or
        None without either."""
        if self.mode == "v1":
            if "cpuacct" not in self.v1_controllers:
                return None
            try:
                usage = read_kernel_file(
                    CGROUP_ROOT / "cpuacct" / self.group / sandbox_id / "cpuacct.usage"
                )
                return int(usage) / 1e9
            except (OSError, ValueError):
                return None
        if self.mode != "v2":
            return None
        for directory in self._dirs(sandbox_id):
            try:
                stat = stat_fields(read_kernel_file(directory / "cpu.stat"))
            except (OSError, ValueError):
                return None
            if "usage_usec" in stat:
                return stat["usage_usec"] / 1e6
        return None
