"""Envoy's admin JSON (shaped as Envoy 1.40 answers) to snapshots, windows and the report's
figures, on fixed inputs."""

from __future__ import annotations

from typing import Any

import pytest

from extproc.loadtest.envoy_stats import StatsWindow, merge, parse_snapshot
from extproc.loadtest.recording import Recorder
from extproc.loadtest.report import EnvoyView, build_report, envoy_figures, render_text

Buckets = dict[str, list[tuple[float, float, int]]]
CLUSTERS = {"cluster_statuses": [{"name": "edge"}, {"name": "sandbox"}]}


def stats(values: dict[str, int], histograms: Buckets) -> Any:
    """`/stats?format=json&histogram_buckets=detailed` with these counters and totals."""
    details = [
        {
            "name": name,
            "totals": [{"lower_bound": lo, "width": w, "count": n} for lo, w, n in buckets],
            "intervals": [],
            "percentiles": [],
        }
        for name, buckets in histograms.items()
    ]
    entries: list[Any] = [{"name": name, "value": value} for name, value in values.items()]
    entries.append({"name": "http.e2b.some_text_readout", "value": "text"})
    entries.append({"histograms": {"supported_percentiles": [50], "details": details}})
    return {"stats": entries}


BEFORE = {
    "http.e2b.downstream_rq_total": 100,
    "http.e2b.downstream_rq_completed": 100,
    "http.e2b.downstream_rq_2xx": 98,
    "http.e2b.downstream_rq_4xx": 2,
    "http.e2b.ext_authz.ok": 98,
    "http.e2b.ext_authz.denied": 2,
    "cluster.edge.upstream_rq_total": 100,
    "cluster.sandbox.upstream_rq_total": 60,
    "cluster.sandbox.upstream_cx_total": 4,
    "cluster.sandbox.upstream_cx_active": 4,
}
# 1 000 more requests: 600 checked by ext_authz (590 ok, 10 denied), 400 served by Envoy alone
AFTER = {
    "http.e2b.downstream_rq_total": 1100,
    "http.e2b.downstream_rq_completed": 1100,
    "http.e2b.downstream_rq_2xx": 1085,
    "http.e2b.downstream_rq_4xx": 12,
    "http.e2b.downstream_rq_5xx": 3,
    "http.e2b.ext_authz.ok": 688,
    "http.e2b.ext_authz.denied": 12,
    "cluster.edge.upstream_rq_total": 700,
    "cluster.sandbox.upstream_rq_total": 1050,
    "cluster.sandbox.upstream_rq_5xx": 3,
    "cluster.sandbox.upstream_cx_total": 10,
    "cluster.sandbox.upstream_cx_active": 2,
}
TIMES_BEFORE: Buckets = {"http.e2b.downstream_rq_time": [(0, 0, 40), (1, 0.1, 60)]}
TIMES_AFTER: Buckets = {
    "http.e2b.downstream_rq_time": [(0, 0, 440), (1, 0.1, 560), (2, 0.1, 90), (15, 1, 10)],
    "cluster.sandbox.upstream_rq_time": [(0, 0, 990)],
}


def window() -> StatsWindow:
    return StatsWindow(
        parse_snapshot(stats(BEFORE, TIMES_BEFORE), CLUSTERS),
        parse_snapshot(stats(AFTER, TIMES_AFTER), CLUSTERS),
    )


def view(**changes: Any) -> EnvoyView:
    fields: dict[str, Any] = {
        "window": window(),
        "stat_prefix": "e2b",
        "admins": ("unix:/state/run/envoy-admin.sock",),
        "settled": True,
        "histogram_wait_s": 6.0,
        "cx_active_peaks": {"sandbox": 9, "http.e2b.downstream_cx_active": 17},
    }
    return EnvoyView(**(fields | changes))


def test_counters_are_deltas_and_gauges_end_values() -> None:
    w = window()
    assert w.counted("http.e2b.downstream_rq_total") == 1000
    assert w.counted("http.e2b.never_used") == 0
    assert w.gauge("cluster.sandbox.upstream_cx_active") == 2
    assert w.histogram("http.e2b.downstream_rq_time").count == 1000
    assert not w.went_backwards(["http.e2b.downstream_rq_total"])


def test_requests_envoy_served_without_a_check_are_reported_as_such() -> None:
    figures = envoy_figures(view(), seconds=10.0)
    assert figures["downstream"]["requests"] == 1000
    assert figures["downstream"]["rate_per_s"] == 100.0
    assert figures["downstream"]["by_class"] == {
        "1xx": 0,
        "2xx": 987,
        "3xx": 0,
        "4xx": 10,
        "5xx": 3,
    }
    authz = figures["ext_authz"]
    assert (authz["ok"], authz["denied"], authz["error"]) == (590, 10, 0)
    assert (authz["checked"], authz["not_checked"]) == (600, 400)


def test_per_cluster_figures() -> None:
    clusters = envoy_figures(view(), seconds=10.0)["clusters"]
    assert list(clusters) == ["sandbox", "edge"]  # by requests
    sandbox = clusters["sandbox"]
    assert (sandbox["requests"], sandbox["5xx"], sandbox["cx_total"]) == (990, 3, 6)
    assert (sandbox["cx_active"], sandbox["cx_active_peak"]) == (2, 9)
    assert sandbox["time_ms"]["count"] == 990
    assert sandbox["time_ms"]["p99"] == 0.0
    assert clusters["edge"]["cx_active_peak"] is None  # never sampled


def test_downstream_quantiles_come_from_the_window_only() -> None:
    time_ms = envoy_figures(view(), seconds=10.0)["downstream"]["time_ms"]
    # window: 400 at 0 ms, 500 in [1, 1.1), 90 in [2, 2.1), 10 in [15, 16)
    assert time_ms["count"] == 1000
    assert time_ms["p50"] == pytest.approx(1.02)  # rank 500: 100/500 across [1, 1.1)
    assert time_ms["p99"] == pytest.approx(2.1)  # rank 990: the top of [2, 2.1)
    assert time_ms["max"] == pytest.approx(16.0)


def test_a_restart_in_the_window_is_noticed() -> None:
    restarted = StatsWindow(
        parse_snapshot(stats(AFTER, TIMES_AFTER), CLUSTERS),
        parse_snapshot(stats(BEFORE, TIMES_BEFORE), CLUSTERS),
    )
    assert restarted.went_backwards(["http.e2b.downstream_rq_total"])
    assert restarted.counted("http.e2b.downstream_rq_total") == 0


def test_replicas_are_summed() -> None:
    one = parse_snapshot(stats(BEFORE, TIMES_BEFORE), CLUSTERS)
    other = parse_snapshot(stats(AFTER, TIMES_AFTER), {"cluster_statuses": [{"name": "x"}]})
    both = merge([one, other])
    assert both.value("http.e2b.downstream_rq_total") == 1200
    assert both.histogram("http.e2b.downstream_rq_time").count == 1200
    assert both.clusters == ("edge", "sandbox", "x")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "no 'stats' list"),
        (
            {"stats": [{"histograms": {"supported_quantiles": [], "computed_quantiles": []}}]},
            "histogram_buckets=detailed",
        ),
    ],
)
def test_answers_that_are_not_envoy_stats_are_refused(body: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_snapshot(body, CLUSTERS)


def test_the_report_warns_about_what_makes_its_figures_doubtful() -> None:
    recorder = Recorder()
    for _ in range(1200):
        recorder.record_ok("envd stat", 0.002)
    recorder.record_error("envd stat", "HTTP 502", "sandbox x: 502")
    report = build_report(
        scenario="data-plane",
        settings={},
        seconds=10.0,
        interrupted=False,
        view=view(settled=False),
        recorder=recorder,
        client={"kind": "test", "cpu_s": 9.0, "cpu_cores": 0.9, "dropped": 5},
        warnings=[],
    )
    text = " ".join(report["warnings"])
    assert "fewer than the 1200 the clients completed" in text
    assert "had not taken in every request" in text
    assert "0.90 of a core" in text
    assert "5 due requests were dropped" in text
    assert report["client"]["errors_by_kind"] == {
        "envd stat: HTTP 502": {"count": 1, "example": "sandbox x: 502"}
    }
    assert report["client"]["operations"]["envd stat"]["latency_ms"]["p50"] == 2.0
    rendered = render_text(report)
    assert "not checked 400" in rendered
    assert "envd stat: HTTP 502 x1" in rendered
