"""What the benchmark scripts share: percentiles, /proc readings, and (from tests/support,
which the test suite uses too) free ports, daemon start-up and `agentcube-e2b up`.

The scripts run as `.venv/bin/python tests/bench/X.py`, which puts only tests/bench on
sys.path; importing this module adds tests/ so that `support` resolves as it does in pytest.
"""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parents[1])
if _TESTS not in sys.path:
    sys.path.insert(1, _TESTS)

from extproc.lifecycle.processes import tree  # noqa: E402
from support.gateway import (  # noqa: E402
    envoy_argv,
    exported,
    lifecycle_metadata,
    lifecycle_target,
    run_dir,
    start_up,
)
from support.processes import NotHealthy, environ_without, free_port, wait_healthy  # noqa: E402

__all__ = [
    "NotHealthy",
    "environ_without",
    "envoy_argv",
    "exported",
    "free_port",
    "lifecycle_metadata",
    "lifecycle_target",
    "memory_kib",
    "pct",
    "run_dir",
    "start_up",
    "status_mib",
    "wait_healthy",
]


def pct(values: list[float], q: float) -> float:
    """The `q` quantile by rank (no interpolation): sorted(values)[int(q * n)], clamped."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def status_mib(pid: int, key: str) -> float:
    """A kB line of /proc/<pid>/status (VmRSS, VmHWM, ...) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in KiB summed over `pid` and its descendants (smaps_rollup); PSS splits
    shared pages fairly. A process that ends meanwhile is skipped."""
    rss = pss = 0
    for p in tree(pid):
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            continue
    return rss, pss
