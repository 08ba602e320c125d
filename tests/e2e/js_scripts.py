"""Running a scenario of tests/js/sandbox_states.cjs (the JS `e2b` SDK) against the gateway."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from support.gateway import Gateway

ROOT = Path(__file__).parents[2]
NODE_MODULES = ROOT / ".venv" / "node" / "node_modules"
SCRIPT = ROOT / "tests" / "js" / "sandbox_states.cjs"


def run_js_scenario(gateway: Gateway, scenario: str, timeout_s: float = 150) -> dict[str, Any]:
    """Run `scenario` with node, configured from the environment as a user's code would be;
    the JSON object it printed last."""
    node = shutil.which("node")
    assert node is not None, "node is required (make venv installs the JS SDK)"
    assert (NODE_MODULES / "e2b").is_dir(), "run `make venv` to install the JS SDK"
    env = {"PATH": os.environ["PATH"], "NODE_PATH": str(NODE_MODULES), **gateway.env}
    result = subprocess.run(
        [node, str(SCRIPT), scenario],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout_s,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    seen: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return seen
