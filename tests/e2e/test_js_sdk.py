"""The official JS `e2b` SDK (tests/js/package.json) against the real gateway, run with node."""

from __future__ import annotations

import pytest

from support.gateway import Gateway

from .js_scripts import run_js


@pytest.mark.timeout(180)
def test_js_sdk_end_to_end(gateway: Gateway) -> None:
    seen = run_js(gateway, "sdk_e2e.cjs")
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
