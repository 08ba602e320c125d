"""Latency distributions: Envoy's histogram buckets over a window, and raw client samples.

Envoy's admin gives each histogram's buckets since start (`totals` of
`/stats?format=json&histogram_buckets=detailed`): the log-linear buckets of its circllhist,
about two significant digits wide (`lower_bound` 120, `width` 10). Its own quantiles
(`computed_quantiles`) are only "since start" or "since the last flush", neither of which is a
load test's window, so the window's distribution is the bucket-by-bucket difference of two
snapshots, and its quantiles are read from that difference here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

# (lower_bound, width): one bucket of Envoy's log-linear histogram
BucketKey = tuple[float, float]


@dataclass(frozen=True)
class BucketHistogram:
    """Sample counts per bucket; a snapshot, or the difference of two."""

    counts: Mapping[BucketKey, int]

    @classmethod
    def from_envoy(cls, buckets: Iterable[Mapping[str, float]]) -> BucketHistogram:
        """From Envoy's `[{"lower_bound": L, "width": W, "count": N}, ...]`."""
        counts: dict[BucketKey, int] = {}
        for bucket in buckets:
            key = (float(bucket["lower_bound"]), float(bucket["width"]))
            counts[key] = counts.get(key, 0) + int(bucket["count"])
        return cls(MappingProxyType(counts))

    @classmethod
    def empty(cls) -> BucketHistogram:
        return cls(MappingProxyType({}))

    @property
    def count(self) -> int:
        return sum(self.counts.values())

    def plus(self, other: BucketHistogram) -> BucketHistogram:
        """Both histograms' samples: several Envoys read as one."""
        counts = dict(self.counts)
        for key, n in other.counts.items():
            counts[key] = counts.get(key, 0) + n
        return BucketHistogram(MappingProxyType(counts))

    def minus(self, earlier: BucketHistogram) -> BucketHistogram:
        """The samples added since `earlier`. Buckets never lose samples while Envoy runs, so
        a bucket that shrank means Envoy restarted in between: it counts as empty here, and
        the caller says so (`shrank`)."""
        counts = {
            key: n - earlier.counts.get(key, 0)
            for key, n in self.counts.items()
            if n > earlier.counts.get(key, 0)
        }
        return BucketHistogram(MappingProxyType(counts))

    def shrank(self, earlier: BucketHistogram) -> bool:
        return any(n > self.counts.get(key, 0) for key, n in earlier.counts.items())

    def quantile(self, q: float) -> float | None:
        """The value below which a fraction `q` of the samples lie, None without samples.

        The rank `q * count` is located in its bucket and interpolated linearly across the
        bucket's width, so the answer is as exact as Envoy's buckets (two significant
        digits): q=0 is the lowest bucket's lower bound, q=1 the highest bucket's upper one.
        """
        _check_fraction(q)
        total = self.count
        if total == 0:
            return None
        rank = q * total
        below = 0
        for (lower, width), n in sorted(self.counts.items()):
            if n == 0:
                continue
            if rank <= below + n:
                return lower + width * max(0.0, rank - below) / n
            below += n
        (lower, width), _ = max(self.counts.items())
        return lower + width


def sample_quantile(ordered: Sequence[float], q: float) -> float | None:
    """The nearest-rank quantile of samples sorted ascending (q=0.5 of 1..100 is 50; q=0
    the smallest); None without samples."""
    _check_fraction(q)
    if not ordered:
        return None
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def _check_fraction(q: float) -> None:
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be within [0, 1], got {q}")
