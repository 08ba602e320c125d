"""The kernel's small text files (/proc, cgroupfs): read cheaply, and the `*.stat` format.

Shared by the lifecycle service, which reads them for every sandbox every few seconds, and
by picod inside a sandbox. Standard library only.
"""

from __future__ import annotations

import os
from pathlib import Path


def read_kernel_file(path: str | Path) -> str:
    """The text of a /proc or cgroupfs file (OSError when it cannot be read).

    os.read, not Path.read_text: the meter and a kill walk these for every sandbox and each
    of its processes, and text mode's machinery costs twice the read itself."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 1 << 16).decode("ascii", "replace")
    finally:
        os.close(fd)


def stat_fields(text: str) -> dict[str, int]:
    """A cgroup `*.stat` file's `key value` lines (ValueError for a malformed value)."""
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value:
            fields[key] = int(value)
    return fields
