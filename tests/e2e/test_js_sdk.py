"""The official JS `e2b` SDK (tests/js/package.json) against the real gateway, run with node."""

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
SCRIPT = ROOT / "tests" / "js" / "sdk_e2e.cjs"


@pytest.mark.timeout(180)
def test_js_sdk_end_to_end(gateway: Gateway) -> None:
    node = shutil.which("node")
    assert node is not None, "node is required (make venv installs the JS SDK)"
    assert (NODE_MODULES / "e2b").is_dir(), "run `make venv` to install the JS SDK"
    env = {"PATH": os.environ["PATH"], "NODE_PATH": str(NODE_MODULES), **gateway.env}
    result = subprocess.run(
        [node, str(SCRIPT)], capture_output=True, text=True, env=env, timeout=150, check=False
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen == {
        "stdout": "from-js\n/home/user\n",
        "exitCode": 0,
        "read": "hello from js",
        "listed": ["hello.txt"],
        "infoId": True,
        "metadata": seen["metadata"] | {},
        "extended": True,
        "pages": 2,
        "paged": True,
        "runningBeforeKill": True,
        "runningAfterKill": False,
    }
    assert seen["metadata"]["suite"].startswith("js-")
