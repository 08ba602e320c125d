"""run_code through the real e2b_code_interpreter SDK against a real kernel."""

from __future__ import annotations

import base64
import struct
import time
import zlib

import pytest
from e2b import TimeoutException
from e2b_code_interpreter import OutputMessage, Sandbox

from .conftest import SANDBOX_ENV, Server


def tiny_png() -> bytes:
    """A valid 1x1 red PNG, built with the stdlib only."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def test_one_plus_one(sandbox: Sandbox) -> None:
    execution = sandbox.run_code("1+1")
    assert execution.text == "2"
    assert execution.error is None
    assert isinstance(execution.execution_count, int)


def test_state_persists_across_calls(sandbox: Sandbox) -> None:
    sandbox.run_code("persisted = 41")
    assert sandbox.run_code("persisted + 1").text == "42"


def test_prints_stream_as_they_happen(sandbox: Sandbox) -> None:
    arrivals: list[tuple[str, float]] = []

    def on_stdout(message: OutputMessage) -> None:
        arrivals.append((message.line, time.monotonic()))

    execution = sandbox.run_code(
        "import time\nprint('first', flush=True)\ntime.sleep(0.8)\nprint('second')",
        on_stdout=on_stdout,
    )
    returned = time.monotonic()
    assert [line for line, _ in arrivals] == ["first\n", "second\n"]
    assert arrivals[1][1] - arrivals[0][1] > 0.5  # separately, not batched at the end
    assert returned - arrivals[0][1] > 0.5
    assert execution.logs.stdout == ["first\n", "second\n"]


def test_stderr_streams(sandbox: Sandbox) -> None:
    execution = sandbox.run_code("import sys; print('oops', file=sys.stderr)")
    assert execution.logs.stderr == ["oops\n"]


def test_exception_gives_error(sandbox: Sandbox) -> None:
    execution = sandbox.run_code("def f():\n    return 1/0\nf()")
    assert execution.error is not None
    assert execution.error.name == "ZeroDivisionError"
    assert execution.error.value == "division by zero"
    assert isinstance(execution.error.traceback, str)
    assert "ZeroDivisionError" in execution.error.traceback
    assert "\n" in execution.error.traceback  # the kernel's lines, joined


def test_syntax_error_and_server_stays_up(sandbox: Sandbox) -> None:
    execution = sandbox.run_code("def (:")
    assert execution.error is not None
    assert execution.error.name == "SyntaxError"
    assert sandbox.run_code("2+2").text == "4"


def test_display_png_and_html(sandbox: Sandbox) -> None:
    png = tiny_png()
    code = (
        "from IPython.display import HTML, Image, display\n"
        f"display(Image(data={png!r}))\n"
        "display(HTML('<b>bold</b>'))\n"
        "'done'"
    )
    execution = sandbox.run_code(code)
    assert execution.error is None
    image, html, main = execution.results
    assert image.png is not None and base64.b64decode(image.png) == png
    assert not image.is_main_result
    assert html.html == "<b>bold</b>" and not html.is_main_result
    assert main.is_main_result and main.text == "'done'"
    assert execution.text == "'done'"


def test_every_mime_type_maps_to_e2b_keys(sandbox: Sandbox) -> None:
    bundle = {
        "text/plain": "plain",
        "text/markdown": "**md**",
        "image/svg+xml": "<svg/>",
        "image/jpeg": "anBn",
        "application/pdf": "cGRm",
        "text/latex": "$x$",
        "application/json": {"a": 1},
        "application/javascript": "1;",
        "application/x-custom": "custom",
    }
    execution = sandbox.run_code(
        f"from IPython.display import publish_display_data\npublish_display_data({bundle!r})"
    )
    (result,) = execution.results
    assert (result.text, result.markdown, result.svg) == ("plain", "**md**", "<svg/>")
    assert (result.jpeg, result.pdf, result.latex) == ("anBn", "cGRm", "$x$")
    assert result.json == {"a": 1}
    assert result.javascript == "1;"
    assert result.extra == {"application/x-custom": "custom"}


def test_env_vars_apply_to_that_execution_only(sandbox: Sandbox) -> None:
    sandbox.run_code("import os; os.environ['KEPT'] = 'before'")
    code = "import os; (os.environ.get('KEPT'), os.environ.get('ONLY_NOW'))"
    execution = sandbox.run_code(code, envs={"KEPT": "during", "ONLY_NOW": "yes"})
    assert execution.text == "('during', 'yes')"
    assert sandbox.run_code(code).text == "('before', None)"


def test_env_vars_restored_after_an_error(sandbox: Sandbox) -> None:
    execution = sandbox.run_code("raise ValueError('x')", envs={"AFTER_ERROR": "1"})
    assert execution.error is not None and execution.error.name == "ValueError"
    assert sandbox.run_code("import os; 'AFTER_ERROR' in os.environ").text == "False"


def test_sandbox_env_vars_come_from_envd(sandbox: Sandbox) -> None:
    ((name, value),) = SANDBOX_ENV.items()
    assert sandbox.run_code(f"import os; os.environ.get({name!r})").text == repr(value)


def test_client_timeout_interrupts_and_next_call_works(sandbox: Sandbox) -> None:
    sandbox.run_code("before_timeout = 'kept'")
    with pytest.raises(TimeoutException):
        sandbox.run_code("while True: pass", timeout=2)
    execution = sandbox.run_code("before_timeout")
    assert execution.error is None
    assert execution.text == "'kept'"  # interrupted, not restarted


def test_huge_output_is_truncated(sandbox: Sandbox, interpreter: Server) -> None:
    execution = sandbox.run_code("for _ in range(50):\n    print('x' * 10_000)")
    assert sum(len(chunk) for chunk in execution.logs.stdout) == 100_000
    assert any("output truncated" in line for line in execution.logs.stderr)
    assert sandbox.run_code("'fine'").text == "'fine'"


def test_dead_kernel_is_restarted_and_reported(sandbox: Sandbox) -> None:
    sandbox.run_code("lost = 1")
    execution = sandbox.run_code("import os; os._exit(1)")
    assert execution.error is not None
    assert execution.error.name == "DeadKernelError"
    after = sandbox.run_code("'lost' in globals()")
    assert after.error is None and after.text == "False"
