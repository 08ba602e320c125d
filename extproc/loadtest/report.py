"""The load test's report: Envoy's view of the window next to the clients' own, as a dict
(written with `--json`) and as text.

Envoy's figures are deltas between two settled admin snapshots (envoy_admin.py), so they
cover every request the gateway served in the window: the load test's, and any other
client's. They do not assume that each request passed ext_authz: requests Envoy served
without a Check (a route with ext_authz off, or answered from xDS state alone) show up as
`not_checked`, and the per-kind counters are Envoy's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from extproc.loadtest.envoy_stats import StatsWindow
from extproc.loadtest.histograms import BucketHistogram
from extproc.loadtest.recording import Recorder

EXT_AUTHZ_OUTCOMES = ("ok", "denied", "error", "failure_mode_allowed", "disabled")
# the outcomes in which the edge was asked (`disabled` means Envoy did not call it)
_CHECKED = ("ok", "denied", "error", "failure_mode_allowed")
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
# above this share of one core, a Python client may be what limits the rate
_BUSY_CLIENT_CORES = 0.8


@dataclass(frozen=True)
class EnvoyView:
    """What the report takes from the admin side."""

    window: StatsWindow
    stat_prefix: str
    admins: tuple[str, ...]
    settled: bool
    histogram_wait_s: float
    cx_active_peaks: dict[str, int]


def latency_ms(histogram: BucketHistogram) -> dict[str, Any]:
    def ms(q: float) -> float | None:
        value = histogram.quantile(q)
        return None if value is None else round(value, 3)

    return {
        "count": histogram.count,
        "p50": ms(0.5),
        "p90": ms(0.9),
        "p99": ms(0.99),
        "max": ms(1.0),
    }


def envoy_figures(view: EnvoyView, seconds: float) -> dict[str, Any]:
    window, prefix = view.window, f"http.{view.stat_prefix}"
    requests = window.counted(f"{prefix}.downstream_rq_total")
    outcomes = {o: window.counted(f"{prefix}.ext_authz.{o}") for o in EXT_AUTHZ_OUTCOMES}
    checked = sum(outcomes[o] for o in _CHECKED)
    clusters: dict[str, dict[str, Any]] = {}
    for name in window.clusters:
        stat = f"cluster.{name}"
        figures: dict[str, Any] = {
            "requests": window.counted(f"{stat}.upstream_rq_total"),
            "5xx": window.counted(f"{stat}.upstream_rq_5xx"),
            "cx_total": window.counted(f"{stat}.upstream_cx_total"),
            "cx_connect_fail": window.counted(f"{stat}.upstream_cx_connect_fail"),
            "cx_active": window.gauge(f"{stat}.upstream_cx_active"),
            "cx_active_peak": view.cx_active_peaks.get(name),
            "time_ms": latency_ms(window.histogram(f"{stat}.upstream_rq_time")),
        }
        if figures["requests"] or figures["cx_total"] or figures["5xx"]:
            figures["rate_per_s"] = round(figures["requests"] / seconds, 1) if seconds else None
            clusters[name] = figures
    counters = [f"{prefix}.downstream_rq_total"]
    counters += [f"cluster.{name}.upstream_rq_total" for name in window.clusters]
    return {
        "admin": list(view.admins),
        "histograms_settled": view.settled,
        "restarted": window.went_backwards(counters),
        "downstream": {
            "requests": requests,
            "rate_per_s": round(requests / seconds, 1) if seconds else None,
            "by_class": {c: window.counted(f"{prefix}.downstream_rq_{c}") for c in STATUS_CLASSES},
            "time_ms": latency_ms(window.histogram(f"{prefix}.downstream_rq_time")),
            "cx_total": window.counted(f"{prefix}.downstream_cx_total"),
            "cx_active_peak": view.cx_active_peaks.get(f"{prefix}.downstream_cx_active"),
        },
        "ext_authz": {**outcomes, "checked": checked, "not_checked": max(0, requests - checked)},
        "clusters": dict(sorted(clusters.items(), key=lambda item: -item[1]["requests"])),
    }


def build_report(
    *,
    scenario: str,
    settings: dict[str, Any],
    seconds: float,
    interrupted: bool,
    view: EnvoyView,
    recorder: Recorder,
    client: dict[str, Any],
    warnings: list[str],
) -> dict[str, Any]:
    envoy = envoy_figures(view, seconds)
    summary = recorder.summary()
    client_figures = {**client, **summary}
    if seconds:
        done = recorder.ok + recorder.failed
        client_figures["rate_per_s"] = round(done / seconds, 1)
    return {
        "scenario": scenario,
        "settings": settings,
        "seconds": round(seconds, 3),
        "interrupted": interrupted,
        "envoy": envoy,
        "client": client_figures,
        "warnings": [*warnings, *_doubts(envoy, view, recorder, client)],
    }


def _doubts(
    envoy: dict[str, Any], view: EnvoyView, recorder: Recorder, client: dict[str, Any]
) -> list[str]:
    """What makes a figure less than it seems, in words."""
    doubts = []
    requests = envoy["downstream"]["requests"]
    admins = ", ".join(view.admins)
    if recorder.ok and requests == 0:
        doubts.append(
            f"Envoy at {admins} counted none of the run's requests: is --admin this gateway's "
            "Envoy?"
        )
    elif requests < recorder.ok:
        doubts.append(
            f"Envoy counted {requests} requests, fewer than the {recorder.ok} the clients "
            "completed: with several Envoy replicas, give each one's admin with --admin"
        )
    if not view.settled:
        doubts.append(
            f"Envoy's histograms had not taken in every request {view.histogram_wait_s:g} s "
            "after the run (its stats flush interval is longer?): their quantiles miss the "
            "last requests; raise --histogram-wait"
        )
    if envoy["restarted"]:
        doubts.append("Envoy's counters went backwards: it restarted during the run")
    cores = client.get("cpu_cores")
    if isinstance(cores, float) and cores > _BUSY_CLIENT_CORES:
        doubts.append(
            f"the load-test client used {cores:.2f} of a core: it may be what limited the "
            "rate; run it on another machine, or run several"
        )
    if client.get("dropped"):
        doubts.append(
            f"the gateway fell behind the rate: {client['dropped']} due requests were dropped "
            "(not sent) after waiting more than the backlog allows"
        )
    return doubts


# --- text ---------------------------------------------------------------------------------


def render_text(report: dict[str, Any]) -> str:
    envoy, client = report["envoy"], report["client"]
    down, authz = envoy["downstream"], envoy["ext_authz"]
    lines = [
        f"agentcube-e2b loadtest: {report['scenario']}, {report['seconds']:.1f} s"
        + (" (interrupted)" if report["interrupted"] else ""),
        "",
        f"Envoy ({', '.join(envoy['admin'])}; deltas over the run)",
        f"  requests     {down['requests']:,}  ({_rate(down['rate_per_s'])})  "
        + "  ".join(f"{c} {n:,}" for c, n in down["by_class"].items() if n),
        f"  time         {_quantiles(down['time_ms'])}",
        f"  ext_authz    ok {authz['ok']:,}  denied {authz['denied']:,}  error "
        f"{authz['error']:,}  failure-allowed {authz['failure_mode_allowed']:,}  "
        f"not checked {authz['not_checked']:,}",
    ]
    if envoy["clusters"]:
        lines.append(
            f"  {'cluster':<14}{'requests':>10}{'rate':>10}{'5xx':>6}{'new cx':>8}"
            f"{'cx active':>11}  upstream time"
        )
        for name, c in envoy["clusters"].items():
            peak = "" if c["cx_active_peak"] is None else f"/{c['cx_active_peak']}"
            lines.append(
                f"  {name:<14}{c['requests']:>10,}{_rate(c['rate_per_s']):>10}{c['5xx']:>6,}"
                f"{c['cx_total']:>8,}{str(c['cx_active']) + peak:>11}  {_quantiles(c['time_ms'])}"
            )
        lines.append("  (cx active: at the end / peak sampled each second)")
    lines.append("  (Envoy times requests in whole milliseconds: under 1 ms counts as 0)")
    lines += ["", f"Client ({client['kind']})"]
    lines.append(f"  {'operation':<16}{'ok':>9}{'errors':>8}  latency")
    for name, op in client["operations"].items():
        lines.append(
            f"  {name:<16}{op['ok']:>9,}{op['errors']:>8,}  {_quantiles(op['latency_ms'])}"
        )
    for key, error in client["errors_by_kind"].items():
        lines.append(f"  error  {key} x{error['count']}: {error['example']}")
    paced = ("due", "dropped", "unfinished")
    extra = [f"{name} {client[name]:,}" for name in paced if name in client]
    if extra:
        lines.append("  requests     " + "  ".join(extra))
    lines.append(f"  client CPU   {client['cpu_s']:.1f} s = {client['cpu_cores']:.2f} cores")
    lines += [f"warning: {text}" for text in report["warnings"]]
    return "\n".join(lines) + "\n"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}/s"


def _quantiles(figures: dict[str, Any]) -> str:
    if not figures["count"]:
        return "no samples"
    return (
        "  ".join(f"{q} {_ms(figures[q])}" for q in ("p50", "p90", "p99", "max"))
        + f"  ({figures['count']:,})"
    )


def _ms(value: float) -> str:
    return f"{value:.2f} ms" if value < 10 else f"{value:,.0f} ms"
