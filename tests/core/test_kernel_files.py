"""core/kernel_files.py: the cgroup `*.stat` format as a table, and the one-read file reader
the lifecycle meter, its kills and picod's /metrics share."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from extproc.core.kernel_files import read_kernel_file, stat_fields


@pytest.mark.parametrize(
    ("text", "fields"),
    [
        ("", {}),
        ("file 4096\nanon 8192\n", {"file": 4096, "anon": 8192}),
        # v1 memory.stat carries both; the caller picks total_cache first
        ("cache 1\ntotal_cache 2", {"cache": 1, "total_cache": 2}),
        # cpu.stat
        ("usage_usec 1500000\nuser_usec 1000000\n", {"usage_usec": 1500000, "user_usec": 1000000}),
        # a line without a value (no space) is not a field
        ("nokey\nfile 3\n", {"file": 3}),
        ("negative -5\n", {"negative": -5}),
    ],
)
def test_stat_fields(text: str, fields: dict[str, int]) -> None:
    assert stat_fields(text) == fields


@pytest.mark.parametrize("text", ["file x\n", "file 1 2\n", "file 1.5\n"])
def test_stat_fields_refuses_a_malformed_value(text: str) -> None:
    with pytest.raises(ValueError):
        stat_fields(text)


def test_read_kernel_file_reads_proc_and_plain_files(tmp_path: Path) -> None:
    stat = read_kernel_file(f"/proc/{os.getpid()}/stat")
    assert stat.startswith(f"{os.getpid()} (")
    written = tmp_path / "memory.current"
    written.write_bytes(b"12345\n\xff")
    # ascii with replacement: a stray byte cannot make a reading raise
    assert read_kernel_file(written) == "12345\n\ufffd"
    with pytest.raises(FileNotFoundError):
        read_kernel_file(tmp_path / "absent")
