"""The official `e2b_code_interpreter` SDK (2.11.5) against the real gateway.

Template code-interpreter-v1 runs picod and the code-interpreter server in one sandbox; the
SDK reaches the interpreter on port 49999 through Envoy, the edge Check and the interpreter's
own JWT check. One sandbox serves the whole module to stay fast. Its kernels run on the data
stack (`up` builds it into the rootfs cache): charts, DataFrames and Bash are tested here
end to end, their details in tests/interpreter.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterator

import httpx
import pytest
from e2b import SandboxException, TimeoutException
from e2b_code_interpreter import OutputMessage, Sandbox
from e2b_code_interpreter.charts import BarChart, ChartType, LineChart, PieChart

from support.gateway import Gateway

TINY_PNG = textwrap.dedent("""
    import struct, zlib
    from IPython.display import Image, display

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    png = (b"\\x89PNG\\r\\n\\x1a\\n"
           + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(b"\\x00\\xff\\x00\\x00"))
           + chunk(b"IEND", b""))
    display(Image(data=png, format="png"))
""")


LINE_CHART = textwrap.dedent("""
    import matplotlib.pyplot as plt
    plt.plot([1, 2, 3], [2, 4, 8], label="growth")
    plt.title("Growth")
    plt.show()
""")
BAR_AND_PIE = textwrap.dedent("""
    import matplotlib.pyplot as plt
    from IPython.display import display
    fig, ax = plt.subplots(); ax.bar(["a", "b"], [1, 2]); display(fig); plt.close(fig)
    fig, ax = plt.subplots(); ax.pie([1, 2], labels=["x", "y"]); display(fig); plt.close(fig)
""")


@pytest.fixture(scope="module")
def sbx(gateway: Gateway) -> Iterator[Sandbox]:
    sandbox = Sandbox.create(timeout=120, envs={"SANDBOX_VAR": "from-create"})
    assert sandbox.get_info().template_id == "code-interpreter-v1"
    yield sandbox
    sandbox.kill()
    assert not sandbox.is_running()


def test_simple_expression(sbx: Sandbox) -> None:
    execution = sbx.run_code("1+1")
    assert execution.error is None
    assert execution.text == "2"


def test_state_persists_across_calls(sbx: Sandbox) -> None:
    assert sbx.run_code("x = 41").error is None
    assert sbx.run_code("x + 1").text == "42"


def test_stdout_streams_before_the_call_returns(sbx: Sandbox) -> None:
    seen: list[tuple[str, float]] = []

    def on_stdout(message: OutputMessage) -> None:
        seen.append((message.line, time.monotonic()))

    code = "import time\nprint('first', flush=True)\ntime.sleep(0.5)\nprint('second', flush=True)"
    execution = sbx.run_code(code, on_stdout=on_stdout)
    returned = time.monotonic()
    assert execution.error is None
    assert [line for line, _ in seen] == ["first\n", "second\n"]
    assert execution.logs.stdout == ["first\n", "second\n"]
    # Streamed, not batched at the end: the first line arrived well before the second.
    assert seen[1][1] - seen[0][1] >= 0.3
    assert returned - seen[0][1] >= 0.3


def test_exception_yields_error_with_traceback(sbx: Sandbox) -> None:
    errors = []
    execution = sbx.run_code("1 / 0", on_error=errors.append)
    assert execution.error is not None
    assert execution.error.name == "ZeroDivisionError"
    assert "division by zero" in execution.error.value
    assert "ZeroDivisionError" in execution.error.traceback
    assert [e.name for e in errors] == ["ZeroDivisionError"]


def test_display_html_and_png(sbx: Sandbox) -> None:
    html = sbx.run_code("from IPython.display import HTML, display\ndisplay(HTML('<b>hi</b>'))")
    assert html.error is None
    assert [r.html for r in html.results] == ["<b>hi</b>"]
    image = sbx.run_code(TINY_PNG)
    assert image.error is None
    assert len(image.results) == 1
    png = image.results[0].png
    assert png is not None and png.startswith("iVBORw0KGgo")  # base64 of the PNG signature


def test_contexts_create_list_restart_remove(sbx: Sandbox) -> None:
    context = sbx.create_code_context(cwd="/tmp")
    assert context.language == "python"
    assert context.cwd == "/tmp"
    assert context.id in {c.id for c in sbx.list_code_contexts()}
    assert sbx.run_code("y = 7", context=context).error is None
    assert sbx.run_code("import os; os.getcwd()", context=context).text == "'/tmp'"
    assert sbx.run_code("y", context=context).text == "7"
    # Contexts are separate kernels: the default context's state is not visible here.
    assert sbx.run_code("x", context=context).error is not None
    sbx.restart_code_context(context)
    lost = sbx.run_code("y", context=context)
    assert lost.error is not None and lost.error.name == "NameError"
    sbx.remove_code_context(context)
    assert context.id not in {c.id for c in sbx.list_code_contexts()}


def test_envs_reach_the_code(sbx: Sandbox) -> None:
    execution = sbx.run_code('import os; os.environ["FOO"]', envs={"FOO": "bar"})
    assert execution.error is None
    assert execution.text == "'bar'"


def test_timeout_raises_and_the_kernel_recovers(sbx: Sandbox) -> None:
    start = time.monotonic()
    with pytest.raises(TimeoutException):
        sbx.run_code("while True: pass", timeout=2)
    assert time.monotonic() - start < 10
    assert sbx.run_code("1+1", timeout=20).text == "2"


def test_execute_without_the_access_token_is_refused(gateway: Gateway, sbx: Sandbox) -> None:
    """The sandbox id is in every hostname and signed URL: knowing it must not run code."""
    host = {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "49999"}
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        bare = client.post("/execute", json={"code": "print('pwned')"}, headers=host)
        wrong = client.post(
            "/execute", json={"code": "print('pwned')"},
            headers={**host, "X-Access-Token": "0" * 64},
        )  # fmt: skip
        right = client.post(
            "/execute", json={"code": "print('mine')"},
            headers={**host, "X-Access-Token": sbx._envd_access_token or ""},
        )  # fmt: skip
    assert bare.status_code == 401, bare.text
    assert wrong.status_code == 401, wrong.text
    assert "pwned" not in bare.text + wrong.text
    assert right.status_code == 200 and "mine" in right.text


def test_a_matplotlib_line_chart(sbx: Sandbox) -> None:
    execution = sbx.run_code(LINE_CHART, timeout=120)
    assert execution.error is None, execution.error
    (result,) = execution.results
    assert result.png is not None and result.png.startswith("iVBORw0KGgo")
    chart = result.chart
    assert isinstance(chart, LineChart)
    assert (chart.type, chart.title) == (ChartType.LINE, "Growth")
    assert [(e.label, e.points) for e in chart.elements] == [
        ("growth", [(1.0, 2.0), (2.0, 4.0), (3.0, 8.0)])
    ]


def test_bar_and_pie_charts(sbx: Sandbox) -> None:
    execution = sbx.run_code(BAR_AND_PIE)
    assert execution.error is None, execution.error
    bar, pie = (r.chart for r in execution.results)
    assert isinstance(bar, BarChart) and bar.type == ChartType.BAR
    assert [(e.label, e.value) for e in bar.elements] == [("a", 1.0), ("b", 2.0)]
    assert isinstance(pie, PieChart) and pie.type == ChartType.PIE
    assert [e.label for e in pie.elements] == ["x", "y"]


def test_a_dataframe_gives_data(sbx: Sandbox) -> None:
    execution = sbx.run_code("import pandas as pd\npd.DataFrame({'city': ['Oslo'], 't': [3.5]})")
    assert execution.error is None, execution.error
    (result,) = execution.results
    assert result.is_main_result and result.data == {"city": ["Oslo"], "t": [3.5]}


def test_bash_and_its_envs(sbx: Sandbox) -> None:
    execution = sbx.run_code(
        'echo "$SANDBOX_VAR $RUN_VAR"', language="bash", envs={"RUN_VAR": "run"}
    )
    assert execution.error is None, execution.error
    assert execution.logs.stdout == ["from-create run\n"]
    assert sbx.run_code('echo "${RUN_VAR-gone}"', language="bash").logs.stdout == ["gone\n"]


def test_python_sees_both_envs(sbx: Sandbox) -> None:
    code = 'import os; os.environ["SANDBOX_VAR"] + " " + os.environ["RUN_VAR"]'
    assert sbx.run_code(code, envs={"RUN_VAR": "run"}).text == "'from-create run'"


def test_commands_python_has_the_stack_too(sbx: Sandbox) -> None:
    """As in E2B's template, a script run through commands imports pandas as well."""
    result = sbx.commands.run("python3 -c 'import pandas, numpy; print(pandas.__version__)'")
    assert result.exit_code == 0 and result.stdout.strip() == "2.3.3"


def test_a_language_without_a_kernel_is_a_clear_error(sbx: Sandbox) -> None:
    with pytest.raises(SandboxException, match="language 'r' is not supported here"):
        sbx.run_code("1", language="r")
