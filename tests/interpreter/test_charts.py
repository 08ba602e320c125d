"""E2B's `chart` and `data` results, parsed by the real SDK, from a kernel on the data stack.

One cell draws every kind of figure and displays each in turn (`display(fig)`), so the
whole table costs one execution; each test reads its own result by position.
"""

from __future__ import annotations

import textwrap

import pytest
from e2b_code_interpreter import Sandbox
from e2b_code_interpreter.charts import (
    BarChart,
    BoxAndWhiskerChart,
    ChartType,
    LineChart,
    PieChart,
    ScaleType,
    ScatterChart,
    SuperChart,
)
from e2b_code_interpreter.models import Execution, Result

from .conftest import Server, sdk

FIGURES = textwrap.dedent("""
    import matplotlib.pyplot as plt, numpy as np, pandas as pd, seaborn as sns
    from IPython.display import display

    # Small PNGs drawn once (not twice for a tight box): the test's speed, not the charts.
    %config InlineBackend.print_figure_kwargs = {"bbox_inches": None}
    plt.rcParams["figure.dpi"] = 20

    def shown(fig):
        display(fig)
        plt.close(fig)

    fig, ax = plt.subplots()
    ax.plot([1, 2, 3], [4, 5, 6], label="rain")
    ax.plot([1, 2, 3], [1, 1, 2], label="snow")
    ax.set_title("Weather"); ax.set_xlabel("Day"); ax.set_ylabel("Depth (mm)")
    shown(fig)

    fig, ax = plt.subplots()
    ax.bar(["apples", "pears", "plums"], [3, 5, 2], label="2024")
    ax.set_title("Fruit"); ax.set_ylabel("Weight [kg]")
    shown(fig)

    fig, ax = plt.subplots()
    x = np.arange(2)
    ax.bar(x - 0.2, [1, 2], 0.4, label="A"); ax.bar(x + 0.2, [3, 4], 0.4, label="B")
    ax.set_xticks(x, ["q1", "q2"])
    shown(fig)

    fig, ax = plt.subplots()
    ax.barh(["low", "high"], [1.5, 2.5])
    shown(fig)

    fig, ax = plt.subplots()
    ax.pie([1, 3], labels=["tea", "coffee"]); ax.set_title("Drinks")
    shown(fig)

    fig, ax = plt.subplots()
    ax.scatter([1, 2, 3], [10, float("nan"), 1000], label="points"); ax.set_yscale("log")
    shown(fig)

    fig, ax = plt.subplots()
    ax.boxplot([[1, 2, 3, 4, 5, 30], [2, 3, 4]], tick_labels=["A", "B"])
    shown(fig)

    fig, ax = plt.subplots()
    ax.boxplot([[1, 2, 3, 4, 5]], orientation="horizontal", patch_artist=True)
    shown(fig)

    fig, ax = plt.subplots()
    ax.plot(pd.date_range("2024-01-01", periods=3), [1, 2, 3])
    shown(fig)

    fig, (left, right) = plt.subplots(1, 2)
    left.plot([1, 2]); right.bar(["x"], [1]); fig.suptitle("Both")
    shown(fig)

    fig, ax = plt.subplots()
    fig.colorbar(ax.imshow([[1, 2], [3, 4]]))
    shown(fig)

    frame = pd.DataFrame({"group": ["a"] * 5 + ["b"] * 5, "value": [1, 2, 3, 4, 5, 2, 3, 4, 5, 6]})
    fig, ax = plt.subplots()
    sns.boxplot(data=frame, x="group", y="value", ax=ax)
    shown(fig)
""")
NAMES = (
    "line", "bar", "grouped", "barh", "pie", "scatter", "box", "box_horizontal", "dates",
    "super", "image", "seaborn_box",
)  # fmt: skip


@pytest.fixture(scope="module")
def figures(analyst: Server) -> dict[str, Result]:
    execution = sdk(analyst).run_code(FIGURES, timeout=120)
    assert execution.error is None, execution.error
    assert len(execution.results) == len(NAMES), [r.formats() for r in execution.results]
    for result in execution.results:
        assert result.png is not None and not result.is_main_result
    return dict(zip(NAMES, execution.results, strict=True))


def test_line_chart(figures: dict[str, Result]) -> None:
    chart = figures["line"].chart
    assert isinstance(chart, LineChart) and chart.type == ChartType.LINE
    assert (chart.title, chart.x_label, chart.y_label) == ("Weather", "Day", "Depth (mm)")
    assert (chart.x_unit, chart.y_unit) == (None, "mm")
    assert [(e.label, e.points) for e in chart.elements] == [
        ("rain", [(1.0, 4.0), (2.0, 5.0), (3.0, 6.0)]),
        ("snow", [(1.0, 1.0), (2.0, 1.0), (3.0, 2.0)]),
    ]
    assert chart.x_scale == ScaleType.LINEAR and chart.y_scale == ScaleType.LINEAR
    assert len(chart.x_ticks) == len(chart.x_tick_labels) > 1
    assert chart.x_tick_labels[chart.x_ticks.index(2.0)] == "2.00"
    assert all(1 - 0.2 <= t <= 3 + 0.2 for t in chart.x_ticks)  # only the visible ticks


def test_bar_charts(figures: dict[str, Result]) -> None:
    bar = figures["bar"].chart
    assert isinstance(bar, BarChart) and bar.type == ChartType.BAR
    assert (bar.title, bar.y_label, bar.y_unit) == ("Fruit", "Weight [kg]", "kg")
    assert [(e.label, e.group, e.value) for e in bar.elements] == [
        ("apples", "2024", 3.0), ("pears", "2024", 5.0), ("plums", "2024", 2.0),
    ]  # fmt: skip
    grouped = figures["grouped"].chart
    assert isinstance(grouped, BarChart)
    # Grouped bars sit beside their tick: each is named by the nearest hand-set label.
    assert [(e.label, e.group, e.value) for e in grouped.elements] == [
        ("q1", "A", 1.0), ("q2", "A", 2.0), ("q1", "B", 3.0), ("q2", "B", 4.0),
    ]  # fmt: skip
    horizontal = figures["barh"].chart
    assert isinstance(horizontal, BarChart)
    assert [(e.label, e.value) for e in horizontal.elements] == [("low", 1.5), ("high", 2.5)]


def test_pie_chart(figures: dict[str, Result]) -> None:
    pie = figures["pie"].chart
    assert isinstance(pie, PieChart) and pie.type == ChartType.PIE and pie.title == "Drinks"
    assert [(e.label, e.angle, e.radius) for e in pie.elements] == [
        ("tea", 90.0, 1.0), ("coffee", 270.0, 1.0),
    ]  # fmt: skip


def test_scatter_chart_on_a_log_scale(figures: dict[str, Result]) -> None:
    scatter = figures["scatter"].chart
    assert isinstance(scatter, ScatterChart) and scatter.type == ChartType.SCATTER
    assert scatter.y_scale == ScaleType.LOG
    (element,) = scatter.elements
    assert element.label == "points"
    first, missing, last = element.points
    assert first == (1.0, 10.0) and last == (3.0, 1000.0)
    assert missing[1] is None  # NaN has no JSON: null


def test_box_and_whisker_charts(figures: dict[str, Result]) -> None:
    box = figures["box"].chart
    assert isinstance(box, BoxAndWhiskerChart) and box.type == ChartType.BOX_AND_WHISKER
    stats = [
        (e.label, e.min, e.first_quartile, e.median, e.third_quartile, e.max, e.outliers)
        for e in box.elements
    ]
    assert stats == [
        ("A", 1.0, 2.25, 3.5, 4.75, 5.0, [30.0]),
        ("B", 2.0, 2.5, 3.0, 3.5, 4.0, []),
    ]
    horizontal = figures["box_horizontal"].chart
    assert isinstance(horizontal, BoxAndWhiskerChart)
    (element,) = horizontal.elements
    assert (element.min, element.median, element.max) == (1.0, 3.0, 5.0)
    seaborn = figures["seaborn_box"].chart
    assert isinstance(seaborn, BoxAndWhiskerChart)
    assert [(e.label, e.median) for e in seaborn.elements] == [("a", 3.0), ("b", 4.0)]
    assert (seaborn.x_label, seaborn.y_label) == ("group", "value")


def test_dates_are_iso_text(figures: dict[str, Result]) -> None:
    chart = figures["dates"].chart
    assert isinstance(chart, LineChart) and chart.x_scale == ScaleType.DATETIME
    (element,) = chart.elements
    assert [x[:10] for x, _ in element.points] == ["2024-01-01", "2024-01-02", "2024-01-03"]
    assert all(isinstance(tick, str) for tick in chart.x_ticks)


def test_several_axes_make_a_superchart(figures: dict[str, Result]) -> None:
    chart = figures["super"].chart
    assert isinstance(chart, SuperChart) and chart.type == ChartType.SUPERCHART
    assert chart.title == "Both"
    assert [c.type for c in chart.elements] == [ChartType.LINE, ChartType.BAR]


def test_an_image_has_no_chart(figures: dict[str, Result]) -> None:
    assert figures["image"].chart is None
    assert figures["image"].png is not None


def test_plt_show_at_the_end_of_a_cell(analysis: Sandbox) -> None:
    """The inline backend: a figure left open is shown when the cell ends."""
    execution = analysis.run_code(
        "import matplotlib.pyplot as plt\nplt.plot([0, 1], [1, 0])\nplt.title('Auto')"
    )
    assert execution.error is None
    chart_results = [r for r in execution.results if r.chart is not None]
    (result,) = chart_results
    assert result.png is not None and result.chart.title == "Auto"  # type: ignore[union-attr]


def test_a_dataframe_gives_data(analysis: Sandbox) -> None:
    code = textwrap.dedent("""
        import numpy as np, pandas as pd
        from IPython.display import display
        frame = pd.DataFrame({
            "n": [1.5, np.nan],
            "when": pd.to_datetime(["2024-01-01", None]),
            "name": ["x", None],
            "count": [1, 2],
        })
        display(frame.head(1))
        frame
    """)
    execution = analysis.run_code(code)
    assert execution.error is None
    shown, main = execution.results
    assert not shown.is_main_result and main.is_main_result
    assert shown.data == {"n": [1.5], "when": ["2024-01-01T00:00:00"], "name": ["x"], "count": [1]}
    assert main.data == {
        "n": [1.5, None],
        "when": ["2024-01-01T00:00:00", None],
        "name": ["x", None],
        "count": [1, 2],
    }
    assert main.html is not None and main.text is not None  # as Jupyter shows it


def test_plain_values_get_no_chart_or_data(analysis: Sandbox) -> None:
    execution: Execution = analysis.run_code("1+1")
    (result,) = execution.results
    assert (result.text, result.chart, result.data) == ("2", None, None)


def test_a_failing_extraction_costs_only_the_chart(analysis: Sandbox) -> None:
    """Extraction runs inside the user's kernel: when it breaks, the figure still shows and
    nothing reaches the user's output."""
    code = textwrap.dedent("""
        import agentcube_e2b_charts, matplotlib.pyplot as plt
        working = agentcube_e2b_charts.axes_chart
        agentcube_e2b_charts.axes_chart = lambda axes: 1 / 0
        try:
            fig = plt.figure()
            fig.gca().plot([1, 2])
            display(fig)
            plt.close(fig)
        finally:
            agentcube_e2b_charts.axes_chart = working
    """)
    execution = analysis.run_code(code)
    assert execution.error is None
    (result,) = execution.results
    assert result.png is not None and result.chart is None
    assert execution.logs.stdout == [] and execution.logs.stderr == []
