"""Each sandbox's recent metric samples, the series E2B's `GET /sandboxes/{id}/metrics` serves.

One ring buffer per sandbox, capped so that a long-lived sandbox holds a bounded amount of
memory; the oldest samples drop off. Samples are kept packed (60 bytes, ~100 with the
object's header, where a `Metric` takes ~300): the default 720 samples, an hour at 5 s,
hold ~72 KiB per sandbox, ~72 MiB for 1000 sandboxes. A buffer exists from the sandbox's
first sample until `forget`: a sample that arrives for a sandbox already forgotten (read
while it ended) is dropped rather than starting a buffer nothing would free.

Windows are whole unix seconds, inclusive at both ends, compared with each sample's whole
second: the precision of the API's `start`/`end` parameters and of `timestampUnix`, so a
sample shown as second S is in every window that names S.
"""

from __future__ import annotations

import math
import struct
from collections import deque
from collections.abc import Iterable

from extproc.core.errors import InvalidArgument
from extproc.lifecycle.sandboxes import Metric

# timestamp, cpu_count, cpu_used_pct, mem_used, mem_total, mem_cache, disk_used, disk_total
_PACKED = struct.Struct("<dIdQQQQQ")


def _pack(m: Metric) -> bytes:
    return _PACKED.pack(m.timestamp, m.cpu_count, m.cpu_used_pct, m.mem_used, m.mem_total,
                        m.mem_cache, m.disk_used, m.disk_total)  # fmt: skip


def _unpack(packed: bytes) -> Metric:
    return Metric(*_PACKED.unpack(packed))


def check_window(start: int | None, end: int | None) -> None:
    """E2B answers 400 to a window that ends before it starts, not an empty list."""
    if start is not None and end is not None and start > end:
        raise InvalidArgument(f"start ({start}) must not be after end ({end})")


def within(metrics: Iterable[Metric], start: int | None, end: int | None) -> list[Metric]:
    """The samples with start <= timestamp <= end, at whole seconds; None is unbounded."""
    low = -math.inf if start is None else start
    high = math.inf if end is None else end
    return [m for m in metrics if low <= math.floor(m.timestamp) <= high]


class MetricHistory:
    def __init__(self, max_samples: int) -> None:
        if max_samples < 1:
            raise ValueError(f"max_samples must be at least 1, not {max_samples}")
        self.max_samples = max_samples
        self._series: dict[str, deque[bytes]] = {}

    def __len__(self) -> int:
        """How many sandboxes have a buffer."""
        return len(self._series)

    def open(self, sandbox_id: str) -> None:
        """Start the sandbox's buffer (idempotent): samples are kept from here on."""
        if sandbox_id not in self._series:
            self._series[sandbox_id] = deque(maxlen=self.max_samples)

    def append(self, sandbox_id: str, metric: Metric) -> None:
        series = self._series.get(sandbox_id)
        if series is not None:
            series.append(_pack(metric))

    def samples(self, sandbox_id: str) -> list[Metric]:
        """The sandbox's buffer, oldest first ([] when it has none)."""
        return [_unpack(packed) for packed in self._series.get(sandbox_id, ())]

    def window(self, sandbox_id: str, start: int | None, end: int | None) -> list[Metric]:
        return within(self.samples(sandbox_id), start, end)

    def forget(self, sandbox_id: str) -> None:
        self._series.pop(sandbox_id, None)
