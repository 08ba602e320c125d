"""What the metrics catalogue (docs/operations.md) and the dashboard (docs/grafana-dashboard.json)
name, and what processes actually export, in one shape: metric name -> (type, label names).

Names are the ones a PromQL query uses: an edge counter with its `_total` suffix (Envoy's
counters have none), a histogram by its base name (its series are `_bucket`, `_sum`, `_count`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase

from extproc.edge.metrics import EdgeMetrics

DOCS = Path(__file__).resolve().parents[2] / "docs"
OPERATIONS = DOCS / "operations.md"
DASHBOARD = DOCS / "grafana-dashboard.json"
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")


@dataclass(frozen=True)
class Metric:
    type: str  # counter, gauge, histogram
    labels: frozenset[str]


Catalogue = dict[str, Metric]

_ROW = re.compile(r"^\| `(?P<name>[a-z_:][a-z0-9_:]*)` \| (?P<type>\w+) \|(?P<labels>[^|]*)\|")


def documented(text: str | None = None) -> Catalogue:
    """The metric table rows of docs/operations.md."""
    rows: Catalogue = {}
    for line in (text if text is not None else OPERATIONS.read_text()).splitlines():
        match = _ROW.match(line)
        if match is None:
            continue
        name = match["name"]
        assert name not in rows, f"{name} is catalogued twice"
        labels = frozenset(re.findall(r"`([a-z_]+)`", match["labels"]))
        rows[name] = Metric(match["type"], labels)
    return rows


# --- what the processes export ------------------------------------------------------------


@dataclass
class _InformerStatus:
    connected: bool = False
    last_sync_at: float | None = 1.0
    relists: int = 1
    events: int = 1
    last_error: str = "watch failed"


def edge_exported() -> Catalogue:
    """Every metric an edge process can export, Kubernetes mode's informers included."""
    metrics = EdgeMetrics()
    metrics.watch_sizes(lambda: 1.0, lambda: 1.0, lambda: 1.0)
    metrics.watch_informers(lambda: {"sandboxes": _InformerStatus()})
    # A labelled metric exports nothing until a child exists: make one of each.
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase) and value._labelnames:
            value.labels(*("x" for _ in value._labelnames))
    return exported(metrics.exposition().decode())


_TYPE_LINE = re.compile(r"^# TYPE (?P<name>\S+) (?P<type>\S+)$")
_SAMPLE_LINE = re.compile(r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?:\{(?P<labels>.*)\})?\s")
_LABEL_NAME = re.compile(r'(?:^|,)([A-Za-z_][A-Za-z0-9_]*)="')


def exported(exposition: str) -> Catalogue:
    """Prometheus text -> catalogue. A counter is named by its series (prometheus_client's
    end in `_total`, Envoy's do not; prometheus_client's own parser would add the suffix to
    Envoy's, hence this one); the `_created` series prometheus_client adds are left out."""
    found: dict[str, tuple[str, set[str]]] = {}
    family, kind = "", ""
    for line in exposition.splitlines():
        if (typed := _TYPE_LINE.match(line)) is not None:
            family, kind = typed["name"], typed["type"]
            continue
        sample = _SAMPLE_LINE.match(line)
        if sample is None or line.startswith("#") or sample["name"].endswith("_created"):
            continue
        name = sample["name"] if kind == "counter" else family
        labels = found.setdefault(name, (kind, set()))[1]
        labels.update(_LABEL_NAME.findall(sample["labels"] or ""))
    return {
        name: Metric(kind, frozenset(labels - {"le"})) for name, (kind, labels) in found.items()
    }


def series_names(catalogue: Catalogue) -> dict[str, str]:
    """Every series name a query can use -> the catalogued metric it belongs to."""
    names = {name: name for name in catalogue}
    for name, metric in catalogue.items():
        if metric.type == "histogram":
            names.update({name + suffix: name for suffix in HISTOGRAM_SERIES})
    return names


# --- PromQL ------------------------------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_TERM = re.compile(
    r"(?<![A-Za-z0-9_:.])(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)"  # not the `m` of `5m`
    r"\s*(?P<matchers>\{[^}]*\})?(?P<call>\s*\()?"
)
_MATCHER_LABEL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan"})


@dataclass(frozen=True)
class Query:
    # series name -> label names its matchers use
    selectors: dict[str, frozenset[str]]
    # label names of by (...), without (...), on (...), ...
    grouping: frozenset[str]


def parse_query(expr: str) -> Query:
    """The series and labels a PromQL expression names (enough of PromQL for dashboards:
    selectors, functions, aggregations with grouping, arithmetic)."""
    text = _RANGE.sub("", _STRING.sub('""', expr))
    grouping = frozenset(
        label.strip() for group in _GROUPING.findall(text) for label in group.split(",")
    ) - {""}
    text = _GROUPING.sub(" ", text)
    selectors: dict[str, frozenset[str]] = {}
    for term in _TERM.finditer(text):
        name = term["name"]
        if term["call"] or name.lower() in _KEYWORDS:
            continue
        labels = frozenset(_MATCHER_LABEL.findall(term["matchers"] or ""))
        selectors[name] = selectors.get(name, frozenset()) | labels
    return Query(selectors, grouping)


@dataclass(frozen=True)
class Target:
    panel: str
    expr: str
    legend: str


def dashboard_targets() -> list[Target]:
    dashboard = json.loads(DASHBOARD.read_text())
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            found.append(Target(panel["title"], target["expr"], target.get("legendFormat", "")))
    return found


def unexplained(targets: list[Target], catalogue: Catalogue) -> list[str]:
    """What the dashboard's queries name that `catalogue` does not have: a series, a label
    of a matcher or a grouping, a label of a legend. Empty when every query is covered."""
    series = series_names(catalogue)
    problems = []
    for target in targets:
        query = parse_query(target.expr)
        labels: set[str] = set()
        for name, matched in query.selectors.items():
            metric = series.get(name)
            if metric is None:
                problems.append(f"{target.panel}: {name} is not exported")
                continue
            known = catalogue[metric].labels | ({"le"} if name.endswith("_bucket") else set())
            labels |= known
            if not matched <= known:
                problems.append(f"{target.panel}: {name} has no label {sorted(matched - known)}")
        if not query.grouping <= labels:
            problems.append(f"{target.panel}: grouping by {sorted(query.grouping - labels)}")
        legend = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.legend))
        if not legend <= query.grouping:
            problems.append(f"{target.panel}: legend names {sorted(legend - query.grouping)}")
    return problems
