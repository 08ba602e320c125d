"""Running the JS SDK scripts of tests/js with node against the gateway."""

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
SCRIPTS = ROOT / "tests" / "js"


def run_js(
    gateway: Gateway, script: str, *args: str, package: str = "e2b", timeout_s: float = 150
) -> dict[str, Any]:
    """Run tests/js/`script` with node, configured from the environment as a user's code
    would be (`package` must be installed); the JSON object it printed last."""
    node = shutil.which("node")
    assert node is not None, "node is required (make venv installs the JS SDKs)"
    assert (NODE_MODULES / package).is_dir(), f"run `make venv` to install {package}"
    env = {"PATH": os.environ["PATH"], "NODE_PATH": str(NODE_MODULES), **gateway.env}
    result = subprocess.run(
        [node, str(SCRIPTS / script), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout_s,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    seen: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return seen


def run_js_scenario(gateway: Gateway, scenario: str, timeout_s: float = 150) -> dict[str, Any]:
    """Run `scenario` of tests/js/sandbox_states.cjs (the JS `e2b` SDK)."""
    return run_js(gateway, "sandbox_states.cjs", scenario, timeout_s=timeout_s)
