"""The matrix scenario for `e2b-code-interpreter`: create, run_code, kill.

Run by a release's own venv with the gateway's E2B_* environment; prints one JSON line (see
_steps.py) that tests/sdk_matrix/test_sdk_matrix.py checks.
"""

from __future__ import annotations

import sys
from typing import Any

from _steps import run
from e2b_code_interpreter import Sandbox  # type: ignore[import-untyped]  # no py.typed

# A print (streamed stdout) and a last expression (an execute_result): both paths of /execute.
CODE = "value = 6 * 7\nprint('interpreter', value)\nvalue"


class Scenario:
    def __init__(self) -> None:
        self._sandbox: Sandbox | None = None
        self.killed = False

    @property
    def sandbox(self) -> Sandbox:
        assert self._sandbox is not None, "create failed"
        return self._sandbox

    def create(self) -> dict[str, Any]:
        self._sandbox = Sandbox.create(timeout=120)
        return {"running": self.sandbox.is_running()}

    def run_code(self) -> dict[str, Any]:
        execution = self.sandbox.run_code(CODE)
        return {
            "stdout": execution.logs.stdout,
            "stderr": execution.logs.stderr,
            "results": [result.text for result in execution.results],
            "error": None if execution.error is None else execution.error.name,
        }

    def kill(self) -> dict[str, Any]:
        killed = self.sandbox.kill()
        self.killed = True
        return {"killed": killed, "running_after": self.sandbox.is_running()}

    def cleanup(self) -> None:
        if self._sandbox is not None and not self.killed:
            Sandbox.kill(self._sandbox.sandbox_id)


def main() -> int:
    scenario = Scenario()
    steps = [
        ("create", scenario.create),
        ("run_code", scenario.run_code),
        ("kill", scenario.kill),
    ]
    return run(["e2b-code-interpreter", "e2b"], steps, scenario.cleanup)


if __name__ == "__main__":
    sys.exit(main())
