"""What the Python scenarios share: named steps run in order, one JSON line at the end.

The line is `{"versions": {...}, "steps": {name: result}, "failed": null | {"step", "error"}}`.
The first step that raises ends the run: its name and error go in `failed` (the traceback to
stderr), so the test says which step of which release broke. This file runs inside each
release's venv: the standard library only.
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable, Sequence
from importlib.metadata import version
from typing import Any

Step = tuple[str, Callable[[], Any]]


def run(packages: Sequence[str], steps: Sequence[Step], cleanup: Callable[[], None]) -> int:
    """Run `steps`, then `cleanup` whatever happened; print the report; 1 if a step failed."""
    report: dict[str, Any] = {
        "versions": {package: version(package) for package in packages},
        "steps": {},
        "failed": None,
    }
    try:
        for name, action in steps:
            try:
                report["steps"][name] = action()
            except Exception as error:
                traceback.print_exc()
                report["failed"] = {"step": name, "error": f"{type(error).__name__}: {error}"}
                break
    finally:
        try:
            cleanup()
        except Exception:
            # The sandbox expires on its own; the report must still be printed.
            traceback.print_exc()
    print(json.dumps(report), flush=True)
    return 0 if report["failed"] is None else 1


if __name__ == "__main__":
    sys.exit("a helper of the scenarios, not a scenario")
