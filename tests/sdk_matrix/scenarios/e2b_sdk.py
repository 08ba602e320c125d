"""The matrix scenario for the Python `e2b` SDK: create, commands.run, files write/read, a
pty (create, send input, read its output, kill), list, kill.

Run by a release's own venv with the gateway's E2B_* environment, as a user's program would
be; it uses only the sync API that every release since 2.7.0 has, and prints one JSON line
(see _steps.py) that tests/sdk_matrix/test_sdk_matrix.py checks.
"""

from __future__ import annotations

import sys
import uuid
from typing import Any

from _steps import run
from e2b import CommandExitException, PtySize, Sandbox, SandboxQuery

# Shell arithmetic: the marker only appears once bash ran the line, not in its echo.
PTY_INPUT = b"echo pty-$((6 * 7))\n"
PTY_MARKER = b"pty-42"


class Scenario:
    def __init__(self) -> None:
        self.tag = f"sdk-matrix-{uuid.uuid4().hex[:12]}"
        self._sandbox: Sandbox | None = None
        self.killed = False

    @property
    def sandbox(self) -> Sandbox:
        assert self._sandbox is not None, "create failed"
        return self._sandbox

    def create(self) -> dict[str, Any]:
        self._sandbox = Sandbox.create(metadata={"suite": self.tag}, timeout=120)
        return {"running": self.sandbox.is_running()}

    def run_command(self) -> dict[str, Any]:
        result = self.sandbox.commands.run("echo matrix; pwd")
        return {"stdout": result.stdout, "exit_code": result.exit_code}

    def files(self) -> dict[str, Any]:
        self.sandbox.files.write("matrix/hello.txt", "hello matrix")
        return {
            "read": self.sandbox.files.read("matrix/hello.txt"),
            "listed": [entry.name for entry in self.sandbox.files.list("matrix")],
        }

    def pty(self) -> dict[str, Any]:
        handle = self.sandbox.pty.create(PtySize(rows=24, cols=80), timeout=60)
        self.sandbox.pty.send_stdin(handle.pid, PTY_INPUT)
        seen = b""
        for _, _, output in handle:
            seen += output or b""
            if PTY_MARKER in seen:
                break
        killed = self.sandbox.pty.kill(handle.pid)
        # The same event stream goes on to the end event the kill causes.
        try:
            exit_code = handle.wait().exit_code
        except CommandExitException as error:
            exit_code = error.exit_code
        return {
            "output": PTY_MARKER in seen,
            "killed": killed,
            "ended_nonzero": exit_code != 0,
            "listed_after_kill": handle.pid in [p.pid for p in self.sandbox.commands.list()],
        }

    def list_sandboxes(self) -> dict[str, Any]:
        paginator = Sandbox.list(query=SandboxQuery(metadata={"suite": self.tag}))
        ids: list[str] = []
        while paginator.has_next:
            ids += [info.sandbox_id for info in paginator.next_items()]
        return {"ids": ["<this sandbox>" if i == self.sandbox.sandbox_id else i for i in ids]}

    def kill(self) -> dict[str, Any]:
        killed = self.sandbox.kill()
        self.killed = True
        return {
            "killed": killed,
            "running_after": self.sandbox.is_running(),
            "kill_again": Sandbox.kill(self.sandbox.sandbox_id),
        }

    def cleanup(self) -> None:
        if self._sandbox is not None and not self.killed:
            Sandbox.kill(self._sandbox.sandbox_id)


def main() -> int:
    scenario = Scenario()
    steps = [
        ("create", scenario.create),
        ("commands.run", scenario.run_command),
        ("files", scenario.files),
        ("pty", scenario.pty),
        ("list", scenario.list_sandboxes),
        ("kill", scenario.kill),
    ]
    return run(["e2b"], steps, scenario.cleanup)


if __name__ == "__main__":
    sys.exit(main())
