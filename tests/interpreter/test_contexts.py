"""Code contexts through the real SDK: create, list, run in, restart, remove."""

from __future__ import annotations

from pathlib import Path

import pytest
from e2b import NotFoundException, SandboxException
from e2b_code_interpreter import Sandbox


def test_context_lifecycle(sandbox: Sandbox, tmp_path: Path) -> None:
    context = sandbox.create_code_context(cwd=str(tmp_path), language="python")
    assert (context.language, context.cwd) == ("python", str(tmp_path))
    assert context.id in [c.id for c in sandbox.list_code_contexts()]

    assert sandbox.run_code("import os; os.getcwd()", context=context).text == repr(str(tmp_path))
    sandbox.run_code("only_here = 1", context=context)
    assert sandbox.run_code("'only_here' in globals()").text == "False"  # default context
    assert sandbox.run_code("only_here", context=context).text == "1"

    sandbox.restart_code_context(context)
    restarted = sandbox.run_code("'only_here' in globals()", context=context)
    assert restarted.text == "False"

    sandbox.remove_code_context(context)
    assert context.id not in [c.id for c in sandbox.list_code_contexts()]
    with pytest.raises(NotFoundException):
        sandbox.run_code("1", context=context)
    with pytest.raises(NotFoundException):
        sandbox.remove_code_context(context.id)
    with pytest.raises(NotFoundException):
        sandbox.restart_code_context(context.id)


def test_language_python_uses_default_context(sandbox: Sandbox) -> None:
    sandbox.run_code("shared_default = 'yes'")
    assert sandbox.run_code("shared_default", language="python").text == "'yes'"


def test_uninstalled_language_names_installed_kernels(sandbox: Sandbox) -> None:
    with pytest.raises(SandboxException) as caught:
        sandbox.run_code("1", language="r")
    assert "400" in str(caught.value)
    assert "'r'" in str(caught.value) and "python" in str(caught.value)


def test_context_with_missing_cwd_is_refused(sandbox: Sandbox, tmp_path: Path) -> None:
    with pytest.raises(SandboxException, match="400"):
        sandbox.create_code_context(cwd=str(tmp_path / "absent"))
