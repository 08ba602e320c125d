"""picod's own series of metric samples: what GET /metrics?start=&end= answers.

Locally the lifecycle service keeps every sandbox's series (lifecycle/measuring.py); on
Kubernetes it cannot poll 10 000 pods every few seconds, so each pod's picod samples itself
and the lifecycle service asks for the series only when a client asks for metrics. The series
lives as long as this picod: a pod started again (a resume) starts a new one.

Sampling runs on a daemon thread of its own, not on the event loop: a slow statvfs or cgroup
read never holds up a request, and the app needs no running loop to start it (picod's server
builds the app, then serves). The thread reads with a `SystemMetrics` of its own, so its CPU
figures span the sampling interval (the first, taken at start, since boot) and the
single-sample GET keeps its own baseline as before.
Samples are kept packed (~90 bytes each with the object's header, where a `Sample` takes
~350): the default 720, an hour at 5 s, hold ~65 KiB, charged to the sandbox's own memory.
Windows are whole unix seconds, inclusive at both ends, as the platform API's `start`/`end`.
"""

from __future__ import annotations

import logging
import math
import struct
import threading
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import parse_qsl

from extproc.core.errors import InvalidArgument
from extproc.core.flags import FALSE_WORDS, TRUE_WORDS
from extproc.picod.sysinfo import MemoryCgroup, Sample, SystemMetrics

log = logging.getLogger(__name__)

# The platform API's start/end are int64 seconds; anything beyond is a bad value, not a bound.
_INT64 = (-(2**63), 2**63 - 1)
# ts, cpu_count, cpu_used_pct, mem_total, mem_used, mem_cache, disk_used, disk_total
_PACKED = struct.Struct("<qIdqqqqq")
_STOP_WAIT_S = 1.0

Window = tuple[int | None, int | None]


def parse_window(query_string: bytes) -> Window | None:
    """The [start, end] a GET /metrics query asks for (None: unbounded), or None when it asks
    for the single current sample (no `start`, `end` or `series`). Raises InvalidArgument
    for a malformed, repeated or out-of-range value, and for start > end."""
    try:
        pairs = parse_qsl(query_string.decode("ascii"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError) as error:
        raise InvalidArgument("the query string is not valid") from error
    given: dict[str, str] = {}
    for name, value in pairs:
        if name in ("start", "end", "series"):
            if name in given:
                raise InvalidArgument(f"{name} is given more than once")
            given[name] = value
    series = given.get("series")
    if series is not None and series.lower() not in TRUE_WORDS | FALSE_WORDS:
        raise InvalidArgument(f"series must be 1 or 0, not {series!r}")
    start, end = _seconds(given, "start"), _seconds(given, "end")
    if start is not None and end is not None and start > end:
        raise InvalidArgument(f"start ({start}) must not be after end ({end})")
    if start is None and end is None and (series is None or series.lower() in FALSE_WORDS):
        return None
    return start, end


def _seconds(given: dict[str, str], name: str) -> int | None:
    raw = given.get(name)
    if raw is None:
        return None
    digits = raw.removeprefix("-")
    if not (digits.isascii() and digits.isdigit() and len(digits) <= 19):
        raise InvalidArgument(f"{name} must be an integer of unix seconds, not {raw!r}")
    value = int(raw)
    if not _INT64[0] <= value <= _INT64[1]:
        raise InvalidArgument(f"{name} is out of range: {raw}")
    return value


def within(samples: Iterable[Sample], start: int | None, end: int | None) -> list[Sample]:
    """The samples with start <= ts <= end (None: unbounded)."""
    low = -math.inf if start is None else start
    high = math.inf if end is None else end
    return [s for s in samples if low <= s.ts <= high]


class MetricSeries:
    """A ring buffer of samples, oldest first; safe to share between threads."""

    def __init__(self, max_samples: int) -> None:
        if max_samples < 1:
            raise ValueError(f"max_samples must be at least 1, not {max_samples}")
        self._samples: deque[bytes] = deque(maxlen=max_samples)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._samples)

    def append(self, sample: Sample) -> None:
        packed = _PACKED.pack(*sample)
        with self._lock:
            self._samples.append(packed)

    def window(self, start: int | None, end: int | None) -> list[Sample]:
        with self._lock:
            packed = list(self._samples)
        return within((Sample(*_PACKED.unpack(p)) for p in packed), start, end)


class Meter:
    """This picod's samples: the one taken on request, and the series kept every
    `interval_s` (none when 0) from construction until `close`."""

    def __init__(self, disk_path: Path, interval_s: float, max_samples: int) -> None:
        cgroup = MemoryCgroup.of_this_process()
        self._now = SystemMetrics(disk_path, cgroup)
        self.series = MetricSeries(max_samples)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if interval_s > 0:
            # The first sample is taken at once: its CPU figure spans the time since boot.
            sampler = SystemMetrics(disk_path, cgroup, cpu_since_boot=True)
            self._thread = threading.Thread(
                target=self._sample, args=(sampler, interval_s), name="picod-metrics", daemon=True
            )
            self._thread.start()

    def current(self) -> Sample:
        """A sample taken now (CPU since the previous one of these)."""
        return self._now.read()

    def window(self, start: int | None, end: int | None) -> list[Sample]:
        """The kept samples in [start, end]; with none kept yet (sampling off, or the first
        not yet taken), one taken now, if it falls in the window."""
        if len(self.series):
            return self.series.window(start, end)
        return within([self.current()], start, end)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(_STOP_WAIT_S)

    def _sample(self, sampler: SystemMetrics, interval_s: float) -> None:
        due = time.monotonic()
        while not self._stop.is_set():
            try:
                self.series.append(sampler.read())
            except Exception:  # one failed read must not end the series
                log.exception("metrics: sampling failed")
            # A read slower than the interval starts the next at once; none is made up.
            due = max(due + interval_s, time.monotonic())
            self._stop.wait(due - time.monotonic())
