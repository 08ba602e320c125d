"""The metrics catalogue and the dashboard against what the edge exports (in process). Envoy's
rows are checked against a running Envoy in test_gateway_trace.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from observability.catalogue import (
    DASHBOARD,
    Metric,
    Target,
    dashboard_targets,
    documented,
    edge_exported,
    parse_query,
    unexplained,
)

EXTPROC = Path(__file__).resolve().parents[2] / "extproc"
EDGE_PREFIX = "agentcube_e2b_"


def test_the_edge_rows_are_exactly_what_an_edge_exports() -> None:
    rows = {name: m for name, m in documented().items() if name.startswith(EDGE_PREFIX)}
    exported = edge_exported()
    assert set(exported) - set(rows) == set(), "exported but not catalogued"
    assert set(rows) - set(exported) == set(), "catalogued but not exported"
    assert {name: rows[name] for name in exported} == exported


def test_only_the_edge_exports_prometheus_metrics() -> None:
    """The catalogue says the lifecycle service, picod and the interpreter export none; a
    module that starts to must add its metrics to the catalogue and to edge_exported's
    counterpart in catalogue.py."""
    exporters = sorted(
        str(path.relative_to(EXTPROC))
        for path in EXTPROC.rglob("*.py")
        if re.search(r"^\s*(from|import) prometheus_client", path.read_text(), re.MULTILINE)
    )
    assert exporters == ["edge/metrics.py"]


def test_every_dashboard_query_is_catalogued() -> None:
    targets = dashboard_targets()
    assert len(targets) >= 20
    assert unexplained(targets, documented()) == []


def test_the_dashboard_is_one_grafana_import() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["__inputs"][0]["pluginId"] == "prometheus"
    panels = dashboard["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}"
        assert panel["targets"] and panel["description"], panel["title"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])


CATALOGUE = {
    "a_total": Metric("counter", frozenset({"kind"})),
    "a_seconds": Metric("histogram", frozenset({"kind"})),
    "b": Metric("gauge", frozenset()),
}


@pytest.mark.parametrize(
    ("expr", "legend", "problems"),
    [
        ('sum by (kind) (rate(a_total{kind="x"}[5m]))', "{{kind}}", []),
        ("histogram_quantile(0.9, sum by (le, kind) (rate(a_seconds_bucket[1m])))", "{{kind}}", []),
        ("time() - max(b) and on () b > bool 0", "", []),
        ("rate(c_total[5m])", "", ["p: c_total is not exported"]),
        ('b{kind=~"x|y"}', "", ["p: b has no label ['kind']"]),
        ("sum by (other) (a_total)", "", ["p: grouping by ['other']"]),
        ("sum(a_total)", "{{kind}}", ["p: legend names ['kind']"]),
        ("sum by (le) (b)", "", ["p: grouping by ['le']"]),  # le only on a histogram's buckets
    ],
)
def test_the_query_check(expr: str, legend: str, problems: list[str]) -> None:
    assert unexplained([Target("p", expr, legend)], CATALOGUE) == problems


def test_the_query_parser_skips_strings_ranges_and_functions() -> None:
    query = parse_query(
        'sum without (a, b) (rate(x_total{c="sum(y)", d!~"z{1}"}[1m] offset 5m)) / ignoring (e) w'
    )
    assert query.selectors == {"x_total": frozenset({"c", "d"}), "w": frozenset()}
    assert query.grouping == {"a", "b", "e"}
