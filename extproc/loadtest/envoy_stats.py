"""Envoy's admin stats as snapshots, and what changed between two of them.

A snapshot is `/stats?format=json&histogram_buckets=detailed` (counters, gauges and the
histograms' buckets since start) plus the cluster names from `/clusters?format=json`. The
names are needed to read per-cluster stats without guessing: Envoy nests scopes under a
cluster's name (`cluster.sandbox.external.upstream_rq_time` next to
`cluster.sandbox.upstream_rq_time`), so a name cannot be parsed back out of a stat.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from extproc.loadtest.histograms import BucketHistogram


@dataclass(frozen=True)
class StatsSnapshot:
    """Counters and gauges (JSON does not tell them apart: the reader knows which is which),
    histograms, and the clusters Envoy has, as read from one or several admin interfaces."""

    values: Mapping[str, int]
    histograms: Mapping[str, BucketHistogram]
    clusters: tuple[str, ...]

    def value(self, name: str) -> int:
        """A stat's value; 0 for one Envoy has never used (`usedonly` omits those)."""
        return self.values.get(name, 0)

    def histogram(self, name: str) -> BucketHistogram:
        return self.histograms.get(name, BucketHistogram.empty())

    def plus(self, other: StatsSnapshot) -> StatsSnapshot:
        """Both Envoys as one: counters, gauges and histograms add up (several replicas)."""
        values = dict(self.values)
        for name, value in other.values.items():
            values[name] = values.get(name, 0) + value
        histograms = dict(self.histograms)
        for name, histogram in other.histograms.items():
            histograms[name] = histograms.get(name, BucketHistogram.empty()).plus(histogram)
        clusters = tuple(dict.fromkeys((*self.clusters, *other.clusters)))
        return StatsSnapshot(MappingProxyType(values), MappingProxyType(histograms), clusters)


def parse_snapshot(stats: Mapping[str, Any], clusters: Mapping[str, Any]) -> StatsSnapshot:
    """From the JSON of `/stats?format=json&histogram_buckets=detailed` and of
    `/clusters?format=json`. Raises ValueError when either is not what Envoy sends."""
    values: dict[str, int] = {}
    histograms: dict[str, BucketHistogram] = {}
    entries = stats.get("stats")
    if not isinstance(entries, list):
        raise ValueError("no 'stats' list in /stats?format=json")
    for entry in entries:
        if "histograms" in entry:
            details = entry["histograms"].get("details")
            if not isinstance(details, list):
                raise ValueError(
                    "histograms without bucket details: this Envoy does not support "
                    "histogram_buckets=detailed (Envoy 1.26 or later does)"
                )
            for histogram in details:
                histograms[histogram["name"]] = BucketHistogram.from_envoy(histogram["totals"])
        elif isinstance(entry.get("value"), int | float):  # text readouts are strings
            values[entry["name"]] = int(entry["value"])
    statuses = clusters.get("cluster_statuses")
    if not isinstance(statuses, list):
        raise ValueError("no 'cluster_statuses' list in /clusters?format=json")
    names = tuple(str(status["name"]) for status in statuses)
    return StatsSnapshot(MappingProxyType(values), MappingProxyType(histograms), names)


def merge(snapshots: Iterable[StatsSnapshot]) -> StatsSnapshot:
    merged = StatsSnapshot(MappingProxyType({}), MappingProxyType({}), ())
    for snapshot in snapshots:
        merged = merged.plus(snapshot)
    return merged


@dataclass(frozen=True)
class StatsWindow:
    """What Envoy counted between two snapshots."""

    before: StatsSnapshot
    after: StatsSnapshot

    def counted(self, name: str) -> int:
        """A counter's increase (never negative: see `went_backwards`)."""
        return max(0, self.after.value(name) - self.before.value(name))

    def gauge(self, name: str) -> int:
        """A gauge's value at the end."""
        return self.after.value(name)

    def histogram(self, name: str) -> BucketHistogram:
        return self.after.histogram(name).minus(self.before.histogram(name))

    @property
    def clusters(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.before.clusters, *self.after.clusters)))

    def went_backwards(self, counters: Iterable[str]) -> bool:
        """True when one of `counters` or a histogram shrank: Envoy restarted (or one of
        several admin interfaces answered for another process) during the window, so its
        deltas undercount."""
        return any(self.after.value(name) < self.before.value(name) for name in counters) or any(
            self.after.histogram(name).shrank(histogram)
            for name, histogram in self.before.histograms.items()
        )
