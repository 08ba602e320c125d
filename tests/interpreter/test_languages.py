"""Languages other than Python through the real SDK: Bash (bash_kernel, from the data stack),
and the clear 400 a language without a kernel gets."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from e2b import SandboxException, TimeoutException
from e2b_code_interpreter import OutputMessage, Sandbox

from .conftest import SANDBOX_ENV


def test_bash_runs_and_streams(analysis: Sandbox) -> None:
    seen: list[tuple[str, float]] = []

    def on_stdout(message: OutputMessage) -> None:
        seen.append((message.line, time.monotonic()))

    execution = analysis.run_code(
        "echo first\nsleep 0.5\necho second", language="bash", on_stdout=on_stdout
    )
    assert execution.error is None
    assert "".join(execution.logs.stdout) == "first\nsecond\n"
    assert seen[-1][1] - seen[0][1] >= 0.3  # streamed, not batched at the end


def test_bash_keeps_its_shell_between_calls(analysis: Sandbox) -> None:
    assert analysis.run_code("kept=41", language="bash").error is None
    assert analysis.run_code("echo $((kept + 1))", language="bash").logs.stdout == ["42\n"]


def test_a_failing_bash_command_is_an_error(analysis: Sandbox) -> None:
    execution = analysis.run_code("ls /no/such/dir", language="bash")
    assert execution.error is not None
    assert execution.error.value == "2"  # bash_kernel reports the exit status
    assert "No such file" in "".join(execution.logs.stdout)


def test_bash_envs_apply_to_that_execution_only(analysis: Sandbox) -> None:
    tricky = 'it\'s $HOME \\ "quoted"\nsecond line'
    analysis.run_code("export KEPT=before", language="bash")
    code = 'printf "%s|%s" "$KEPT" "$ONLY_NOW"'
    during = analysis.run_code(code, language="bash", envs={"KEPT": "now", "ONLY_NOW": tricky})
    # bash_kernel ends output that has no final newline with one.
    assert "".join(during.logs.stdout) == f"now|{tricky}\n"
    after = analysis.run_code('printf "%s|%s" "$KEPT" "${ONLY_NOW-unset}"', language="bash")
    assert "".join(after.logs.stdout) == "before|unset\n"


def test_bash_sees_the_sandbox_env_vars(analysis: Sandbox) -> None:
    ((name, value),) = SANDBOX_ENV.items()
    execution = analysis.run_code(f'echo "${name}"', language="bash")
    assert execution.logs.stdout == [f"{value}\n"]


def test_a_name_bash_cannot_take_is_refused(analysis: Sandbox) -> None:
    with pytest.raises(SandboxException, match="400") as caught:
        analysis.run_code("echo hi", language="bash", envs={"NOT-AN-IDENTIFIER": "x"})
    assert "NOT-AN-IDENTIFIER" in str(caught.value)


def test_a_bash_context_with_its_cwd(analysis: Sandbox, tmp_path: Path) -> None:
    context = analysis.create_code_context(language="bash", cwd=str(tmp_path))
    try:
        assert context.language == "bash"
        assert context.id in {c.id for c in analysis.list_code_contexts()}
        execution = analysis.run_code("pwd", context=context)
        assert execution.logs.stdout == [f"{tmp_path}\n"]
    finally:
        analysis.remove_code_context(context)


def test_a_bash_timeout_interrupts_and_the_shell_recovers(analysis: Sandbox) -> None:
    start = time.monotonic()
    with pytest.raises(TimeoutException):
        analysis.run_code("sleep 30", language="bash", timeout=2)
    assert time.monotonic() - start < 10
    assert analysis.run_code("echo back", language="bash", timeout=20).logs.stdout == ["back\n"]


def test_python_by_any_case(analysis: Sandbox) -> None:
    assert analysis.run_code("6 * 7", language=" Python ").text == "42"


@pytest.mark.parametrize("language", ["r", "js", "java"])
def test_a_language_without_a_kernel_is_named(analysis: Sandbox, language: str) -> None:
    with pytest.raises(SandboxException, match="400") as caught:
        analysis.run_code("1", language=language)
    message = str(caught.value)
    assert f"language {language!r} is not supported here" in message
    assert "installed: bash, python" in message
    with pytest.raises(SandboxException, match=f"language {language!r}"):
        analysis.create_code_context(language=language)


def test_bash_is_offered_only_where_bash_kernel_imports(sandbox: Sandbox) -> None:
    """The plain test interpreter runs kernels on the gateway's venv, without bash_kernel."""
    with pytest.raises(SandboxException, match="language 'bash' is not supported"):
        sandbox.run_code("echo hi", language="bash")
