"""The server's execution timeout on a kernel that answers an interrupt without an error
message (bash_kernel does): the stream still ends with a TimeoutError. A stand-in kernel."""

from __future__ import annotations

from typing import Any

from extproc.interpreter.envs import SandboxEnvs
from extproc.interpreter.executing import Executor
from extproc.interpreter.outputs import Line
from extproc.interpreter.settings import InterpreterSettings


class SilentOnInterrupt:
    """Says nothing until interrupted, then goes idle (no `error` message)."""

    def __init__(self) -> None:
        self.interrupted = False

    async def next_message(self, msg_id: str, wait: float) -> dict[str, Any] | None:
        if not self.interrupted:
            return None
        return {"header": {"msg_type": "status"}, "content": {"execution_state": "idle"}}

    async def is_alive(self) -> bool:
        return True

    async def interrupt(self) -> None:
        self.interrupted = True


async def test_an_interrupt_without_an_error_is_reported_as_a_timeout() -> None:
    settings = InterpreterSettings(execution_timeout=0.05, keepalive_interval=60)
    executor = Executor(settings, SandboxEnvs(None))
    kernel = SilentOnInterrupt()
    lines: list[Line] = []

    async def emit(line: Line) -> None:
        lines.append(line)

    await executor._stream(kernel, "msg", emit)  # type: ignore[arg-type]
    assert kernel.interrupted
    assert [(line["type"], line["name"]) for line in lines] == [("error", "TimeoutError")]
    assert "exceeded 0.05 s and was interrupted" in lines[0]["value"]
