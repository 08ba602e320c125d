"""The Python kernel: ipykernel plus what E2B's results need, started as
`python -m agentcube_e2b_kernel [--agentcube-preload] -f CONNECTION_FILE [ipykernel flags]`.

What it adds to a plain ipykernel:
- matplotlib's inline backend unless the environment names another (`MPLBACKEND`): figures
  render to PNG at the end of a cell, and nothing needs a display;
- two display formatters, so that a result carries E2B's `chart` (a matplotlib Figure, see
  agentcube_e2b_charts) and `data` (a pandas DataFrame) beside its png, html and text. They
  recognise their type by name, so neither library is imported for them, and a formatter
  that fails gives no key rather than a traceback in the user's output;
- with `--agentcube-preload`, numpy, pandas and matplotlib.pyplot imported before the kernel
  answers, so the first cell that uses them does not wait for the imports.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import sys
from typing import Any

# Result MIME types the interpreter server maps to the SDK's `chart` and `data` keys.
CHART_MIME = "application/vnd.agentcube-e2b.chart+json"
DATA_MIME = "application/vnd.agentcube-e2b.data+json"
PRELOAD_FLAG = "--agentcube-preload"
PRELOADED = ("numpy", "pandas", "matplotlib.pyplot")
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


def json_value(value: Any) -> Any:
    """`value` as JSON can carry it: NaN, NaT and NA as null, dates as ISO 8601 text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    try:
        if value != value:  # NaN-like: NaT
            return None
    except (TypeError, ValueError):  # pandas.NA has no truth value
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):  # a numpy scalar that escaped tolist()
        return json_value(value.item())
    return str(value)


def dataframe_data(frame: Any) -> dict[str, list[Any]] | None:
    """A DataFrame as E2B's `data`: column name -> the column's values, in order."""
    try:
        return {
            str(column): [json_value(v) for v in frame.iloc[:, position].tolist()]
            for position, column in enumerate(frame.columns)
        }
    except Exception:  # never a traceback in the user's output for a bonus key
        return None


def figure_chart(figure: Any) -> dict[str, Any] | None:
    try:
        charts = importlib.import_module("agentcube_e2b_charts")
        chart: dict[str, Any] | None = charts.figure_chart(figure)
    except Exception:
        return None
    return chart


def register_formatters(shell: Any) -> None:
    """Add the chart and data formatters to the shell's display formatter.

    They find their type by name in the object's class hierarchy themselves, rather than
    through IPython's type registry: importing pyplot under the inline backend removes
    Figure from every formatter's registry (IPython's select_figure_formats).
    """
    formatters = importlib.import_module("IPython.core.formatters")

    class ByTypeName(formatters.BaseFormatter):  # type: ignore[misc,name-defined]
        _return_type = (dict,)

        def __init__(self, mime: str, kind: tuple[str, str], function: Any, **kw: Any) -> None:
            super().__init__(format_type=mime, **kw)
            self._kind, self._function = kind, function

        def __call__(self, obj: Any) -> Any:
            if self.enabled and any(
                (c.__module__, c.__name__) == self._kind for c in type(obj).__mro__
            ):
                return self._function(obj)
            return None

    for mime, kind, function in (
        (CHART_MIME, ("matplotlib.figure", "Figure"), figure_chart),
        (DATA_MIME, ("pandas.core.frame", "DataFrame"), dataframe_data),
    ):
        formatter = ByTypeName(mime, kind, function, parent=shell.display_formatter)
        shell.display_formatter.register_formatter(formatter)


def preload() -> None:
    for name in PRELOADED:
        with contextlib.suppress(ImportError):  # a kernel without the data stack still starts
            importlib.import_module(name)


def main(argv: list[str]) -> None:
    wanted_preload = PRELOAD_FLAG in argv
    os.environ.setdefault("MPLBACKEND", INLINE_BACKEND)
    kernelapp = importlib.import_module("ipykernel.kernelapp")
    app = kernelapp.IPKernelApp.instance()
    app.initialize([arg for arg in argv if arg != PRELOAD_FLAG])
    register_formatters(app.shell)
    if wanted_preload:
        preload()
    app.start()


if __name__ == "__main__":
    main(sys.argv[1:])
