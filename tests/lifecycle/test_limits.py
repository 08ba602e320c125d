"""cgroup v1 accounting (lifecycle/limits.py): where the cpuacct hierarchy is writable each
sandbox gets a group in it too, and its CPU is read from there instead of from /proc."""

from __future__ import annotations

from pathlib import Path

import pytest

from extproc.lifecycle import limits
from extproc.lifecycle.limits import Cgroups


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(limits, "CGROUP_ROOT", tmp_path)
    for controller in ("pids", "memory", "cpuacct"):
        (tmp_path / controller).mkdir()
    return tmp_path


def test_v1_detects_a_writable_cpuacct(root: Path) -> None:
    assert Cgroups.detect("g").v1_controllers == ("pids", "memory", "cpuacct")
    (root / "cpuacct").rmdir()
    assert Cgroups.detect("g").v1_controllers == ("pids", "memory")


def test_a_v1_sandbox_joins_cpuacct_and_its_cpu_is_read_there(root: Path) -> None:
    cgroups = Cgroups.detect("g")
    procs = cgroups.prepare("sbx", memory_mb=512, max_processes=100)
    assert procs == [root / c / "g" / "sbx" / "cgroup.procs" for c in ("pids", "memory", "cpuacct")]
    assert (root / "pids/g/sbx/pids.max").read_text() == "100"
    assert (root / "memory/g/sbx/memory.limit_in_bytes").read_text() == str(512 << 20)
    assert cgroups.cpu_seconds("sbx") is None  # no usage file (yet)
    (root / "cpuacct/g/sbx/cpuacct.usage").write_text("2500000000\n")
    assert cgroups.cpu_seconds("sbx") == 2.5
    assert Cgroups("v1", "g").cpu_seconds("sbx") is None  # a host without cpuacct
