"""One base rootfs cache for tests and benchmarks, and every process they start.

`make test` fills it before pytest runs (`agentcube-e2b rootfs build`); importing this module
points AGENTCUBE_E2B_ROOTFS_CACHE_DIR at it unless the caller chose another. Without it each
temporary state directory would build its own base (about a minute and 330 MiB each).
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_DIR = Path(__file__).resolve().parents[2] / ".cache" / "rootfs"
os.environ.setdefault("AGENTCUBE_E2B_ROOTFS_CACHE_DIR", str(CACHE_DIR))
