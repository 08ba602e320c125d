"""The official JS `@e2b/code-interpreter` SDK (tests/js/package.json) against the real
gateway, run with node: the same data-analysis results the Python SDK gets."""

from __future__ import annotations

import pytest

from support.gateway import Gateway

from .js_scripts import run_js


@pytest.mark.timeout(180)
def test_js_code_interpreter_sdk(gateway: Gateway) -> None:
    seen = run_js(gateway, "code_interpreter_e2e.cjs", package="@e2b/code-interpreter")
    assert seen == {
        "text": "2",
        "png": True,
        "chart": {"type": "bar", "title": "From JS", "elements": [["a", "n", 1], ["b", "n", 2]]},
        "data": {"x": [1, 2]},
        "bash": ["from-create run\n"],
        "r": seen["r"],
    }
    assert seen["r"].startswith("400")  # the JS SDK shows the status only
