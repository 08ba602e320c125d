"""The official JS `@e2b/code-interpreter` SDK (tests/js/package.json) against the real
gateway, run with node: the same data-analysis results the Python SDK gets."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from support.gateway import Gateway

ROOT = Path(__file__).parents[2]
NODE_MODULES = ROOT / ".venv" / "node" / "node_modules"
SCRIPT = ROOT / "tests" / "js" / "code_interpreter_e2e.cjs"


@pytest.mark.timeout(180)
def test_js_code_interpreter_sdk(gateway: Gateway) -> None:
    node = shutil.which("node")
    assert node is not None, "node is required (make venv installs the JS SDKs)"
    package = NODE_MODULES / "@e2b" / "code-interpreter"
    assert package.is_dir(), "run `make venv` to install the JS SDKs"
    env = {"PATH": os.environ["PATH"], "NODE_PATH": str(NODE_MODULES), **gateway.env}
    result = subprocess.run(
        [node, str(SCRIPT)], capture_output=True, text=True, env=env, timeout=150, check=False
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen == {
        "text": "2",
        "png": True,
        "chart": {"type": "bar", "title": "From JS", "elements": [["a", "n", 1], ["b", "n", 2]]},
        "data": {"x": [1, 2]},
        "bash": ["from-create run\n"],
        "r": seen["r"],
    }
    assert seen["r"].startswith("400")  # the JS SDK shows the status only
