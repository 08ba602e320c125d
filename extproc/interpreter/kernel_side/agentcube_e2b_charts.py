"""A matplotlib Figure as E2B's `chart`, extracted in the kernel when the figure is displayed.

The dict has the shape the SDK parses (e2b_code_interpreter.charts): `type`, `title` and
`elements`; 2-D charts add `x_label`, `y_label`, `x_unit`, `y_unit` (a unit is the text in
trailing parentheses or brackets of the label, "Distance (km)" -> "km"); line and scatter
charts add each axis's ticks, tick labels and scale.

One Axes with a recognised chart gives that chart; several give a `superchart` (titled by
the figure's suptitle) of the recognised ones; none (an image, a heatmap, an empty figure)
gives no chart. An Axes is read as the first of:
- pie: Wedge patches, one element per wedge (its label, angle in degrees, radius);
- box_and_whisker: the artists Axes.bxp draws (also under seaborn): per box a closed
  rectangle (a Line2D, or a PathPatch with patch_artist), a median line across it, a
  whisker from each end and fliers on its centre line;
- bar: Rectangle patches, per BarContainer (its label is the element's group); a bar's
  label is the tick label at its centre, its value the height (the width for barh);
- line: Line2D artists, then scatter: PathCollection offsets; one element of points each.
Values on a date axis are ISO 8601 text, on a categorical axis the category; NaN is null.
Only public matplotlib API is used, except a categorical axis's category list (UnitData).
"""

from __future__ import annotations

import importlib
import itertools
import math
import re
from typing import Any

Chart = dict[str, Any]
# The trailing "(unit)" or "[unit]" of an axis label.
_UNIT = re.compile(r"[(\[]\s*([^()\[\]]+?)\s*[)\]]\s*$")


def figure_chart(figure: Any) -> Chart | None:
    charts = [chart for axes in figure.get_axes() if (chart := axes_chart(axes)) is not None]
    if not charts:
        return None
    if len(charts) == 1:
        return charts[0]
    suptitle = figure.get_suptitle() if hasattr(figure, "get_suptitle") else ""
    return {"type": "superchart", "title": suptitle or None, "elements": charts}


def axes_chart(axes: Any) -> Chart | None:
    patches = importlib.import_module("matplotlib.patches")
    collections = importlib.import_module("matplotlib.collections")
    wedges = [p for p in axes.patches if isinstance(p, patches.Wedge)]
    if wedges:
        return _pie(axes, wedges)
    boxes = _box_and_whisker(axes, patches)
    if boxes is not None:
        return boxes
    if any(isinstance(p, patches.Rectangle) for p in axes.patches):
        return _bar(axes, patches)
    lines = [line for line in axes.get_lines() if len(line.get_xydata())]
    scatters = [c for c in axes.collections if isinstance(c, collections.PathCollection)]
    if lines or scatters:
        return _points(axes, "line" if lines else "scatter", lines, scatters)
    return None


def _title(axes: Any) -> str | None:
    for loc in ("center", "left", "right"):
        if title := axes.get_title(loc):
            return str(title)
    return None


def _number(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


def _unit(label: str) -> str | None:
    match = _UNIT.search(label)
    return match.group(1) if match else None


class _Axis:
    """One axis: its scale and how its data values read (dates, categories, numbers)."""

    def __init__(self, axis: Any, scale: str) -> None:
        self.axis = axis
        self.label = str(axis.get_label_text()) or None
        converter = axis.get_converter() if hasattr(axis, "get_converter") else axis.converter
        formatter_module = type(axis.get_major_formatter()).__module__
        converter_module = type(converter).__module__ if converter is not None else ""
        self.categories: dict[int, str] = {}
        if "matplotlib.dates" in (converter_module, formatter_module):
            self.scale = "datetime"
            self._num2date = importlib.import_module("matplotlib.dates").num2date
        elif converter_module == "matplotlib.category":
            self.scale = "categorical"
            mapping = getattr(axis.get_units(), "_mapping", {}) or {}
            self.categories = {int(position): str(name) for name, position in mapping.items()}
        else:
            self.scale = scale

    def value(self, raw: Any) -> Any:
        number = _number(raw)
        if number is None:
            return None
        if self.scale == "datetime":
            return self._num2date(number).isoformat()
        if self.scale == "categorical" and number.is_integer():
            return self.categories.get(int(number), number)
        return number

    def ticks(self) -> tuple[list[Any], list[str]]:
        """(tick positions as values, tick label texts) of the visible major ticks."""
        index = 0 if self.axis.axis_name == "x" else 1
        low, high = sorted(self.axis.get_view_interval())
        slack = (high - low) * 1e-9
        labels = [
            label
            for label in self.axis.get_majorticklabels()  # brings the ticks up to date first
            if low - slack <= label.get_position()[index] <= high + slack
        ]
        positions = [self.value(label.get_position()[index]) for label in labels]
        return positions, [str(label.get_text()) for label in labels]

    def label_at(self, position: float) -> str:
        """The tick label at `position`; on an axis labelled by hand (set_xticks with
        labels) or by category, the nearest one within half a tick's spacing (grouped
        bars sit beside their tick); else the category there, else the number."""
        ticks = [
            (tick, text) for tick, text in zip(*self.ticks(), strict=True)
            if isinstance(tick, float) and text
        ]  # fmt: skip
        for tick, text in ticks:
            if math.isclose(tick, position, abs_tol=1e-9):
                return text
        by_hand = type(self.axis.get_major_locator()).__name__ == "FixedLocator"
        if ticks and (by_hand or self.scale == "categorical"):
            positions = sorted(tick for tick, _ in ticks)
            spacing = min((b - a for a, b in itertools.pairwise(positions)), default=math.inf)
            tick, text = min(ticks, key=lambda pair: abs(pair[0] - position))
            if abs(tick - position) < spacing / 2:
                return text
        value = self.value(position)
        return value if isinstance(value, str) else f"{position:g}"


def _two_d(axes: Any, kind: str, elements: list[Any]) -> Chart:
    x_label, y_label = str(axes.get_xlabel()) or None, str(axes.get_ylabel()) or None
    return {
        "type": kind,
        "title": _title(axes),
        "x_label": x_label,
        "y_label": y_label,
        "x_unit": _unit(x_label) if x_label else None,
        "y_unit": _unit(y_label) if y_label else None,
        "elements": elements,
    }


def _points(axes: Any, kind: str, lines: list[Any], scatters: list[Any]) -> Chart:
    x = _Axis(axes.xaxis, str(axes.get_xscale()))
    y = _Axis(axes.yaxis, str(axes.get_yscale()))
    elements = []
    for artist, xy in [(line, line.get_xydata()) for line in lines] + [
        (collection, collection.get_offsets()) for collection in scatters
    ]:
        points = [[x.value(px), y.value(py)] for px, py in xy]
        elements.append({"label": str(artist.get_label()), "points": points})
    chart = _two_d(axes, kind, elements)
    for name, axis in (("x", x), ("y", y)):
        ticks, labels = axis.ticks()
        chart[f"{name}_ticks"] = ticks
        chart[f"{name}_tick_labels"] = labels
        chart[f"{name}_scale"] = axis.scale
    return chart


def _bar(axes: Any, patches: Any) -> Chart:
    containers = importlib.import_module("matplotlib.container")
    x = _Axis(axes.xaxis, str(axes.get_xscale()))
    y = _Axis(axes.yaxis, str(axes.get_yscale()))
    groups = [
        (str(c.get_label()), c.patches, getattr(c, "orientation", None))
        for c in axes.containers
        if isinstance(c, containers.BarContainer)
    ]
    if not groups:  # rectangles added by hand
        rectangles = [p for p in axes.patches if isinstance(p, patches.Rectangle)]
        groups = [("", rectangles, "vertical")]
    elements = []
    for group, rectangles, orientation in groups:
        for rectangle in rectangles:
            left, bottom = rectangle.get_x(), rectangle.get_y()
            width, height = rectangle.get_width(), rectangle.get_height()
            if orientation == "horizontal":
                label, value = y.label_at(bottom + height / 2), width
            else:
                label, value = x.label_at(left + width / 2), height
            elements.append({"label": label, "group": group, "value": _number(value)})
    return _two_d(axes, "bar", elements)


def _pie(axes: Any, wedges: list[Any]) -> Chart:
    elements = [
        {
            "label": str(wedge.get_label()),
            "angle": _number(abs(wedge.theta2 - wedge.theta1)),
            "radius": _number(wedge.r),
        }
        for wedge in wedges
    ]
    return {"type": "pie", "title": _title(axes), "elements": elements}


def _rectangle(points: Any) -> tuple[float, float, float, float] | None:
    """(x0, x1, y0, y1) if `points` trace a closed axis-aligned rectangle, else None."""
    if len(points) < 5:
        return None
    xs = sorted({float(p[0]) for p in points})
    ys = sorted({float(p[1]) for p in points})
    closed = tuple(points[0]) == tuple(points[-1])
    if not closed or len(xs) != 2 or len(ys) != 2:
        return None
    return xs[0], xs[1], ys[0], ys[1]


def _box_and_whisker(axes: Any, patches: Any) -> Chart | None:
    boxes = [r for line in axes.get_lines() if (r := _rectangle(line.get_xydata()))]
    boxes += [
        r
        for patch in axes.patches
        if isinstance(patch, patches.PathPatch) and (r := _rectangle(patch.get_path().vertices))
    ]
    if not boxes:
        return None
    # Segments as (x0, y0, x1, y1), and fliers (marker-only lines) as lists of points.
    segments = []
    fliers = []
    for line in axes.get_lines():
        xy = line.get_xydata()
        if line.get_linestyle() in ("None", "none", "", " "):
            fliers.append([(float(px), float(py)) for px, py in xy])
        elif len(xy) == 2:
            segments.append((float(xy[0][0]), float(xy[0][1]), float(xy[1][0]), float(xy[1][1])))
    x = _Axis(axes.xaxis, str(axes.get_xscale()))
    y = _Axis(axes.yaxis, str(axes.get_yscale()))
    elements = []
    for x0, x1, y0, y1 in boxes:
        element = _box(x0, x1, y0, y1, segments, fliers, x) or _box(
            y0, y1, x0, x1, [(b, a, d, c) for a, b, c, d in segments],
            [[(b, a) for a, b in points] for points in fliers], y,
        )  # fmt: skip
        if element is None:
            return None  # a rectangle that is not a box plot's box: not a box plot
        elements.append(element)
    return _two_d(axes, "box_and_whisker", elements)


def _box(
    left: float, right: float, q1: float, q3: float,
    segments: list[tuple[float, float, float, float]],
    fliers: list[list[tuple[float, float]]], across: _Axis,
) -> dict[str, Any] | None:  # fmt: skip
    """The stats of one vertical box (boxes across `across`), or None if its median or
    whiskers are not there (for a horizontal plot the caller swaps the coordinates)."""
    centre = (left + right) / 2

    def close(a: float, b: float) -> bool:
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)

    medians = [
        ya for xa, ya, xb, yb in segments
        if close(ya, yb) and {round(xa, 9), round(xb, 9)} == {round(left, 9), round(right, 9)}
        and q1 - 1e-9 <= ya <= q3 + 1e-9
    ]  # fmt: skip
    whiskers = [(ya, yb) for xa, ya, xb, yb in segments if close(xa, centre) and close(xb, centre)]
    low = [min(a, b) for a, b in whiskers if close(max(a, b), q1)]
    high = [max(a, b) for a, b in whiskers if close(min(a, b), q3)]
    if not medians or not low or not high:
        return None
    outliers = [_number(py) for points in fliers for px, py in points if close(px, centre)]
    return {
        "label": across.label_at(centre),
        "min": _number(min(low)),
        "first_quartile": _number(q1),
        "median": _number(medians[0]),
        "third_quartile": _number(q3),
        "max": _number(max(high)),
        "outliers": outliers,
    }
