"""The data stack layer (extproc/lifecycle/data_stack.py) and the pure pieces around it:
how a built layer looks, how it is named, and the env var code Bash kernels get."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from extproc.core.errors import InvalidArgument
from extproc.interpreter import env_code
from extproc.interpreter.kernel_side.agentcube_e2b_kernel import CHART_MIME, DATA_MIME
from extproc.interpreter.kernel_specs import normalize
from extproc.interpreter.outputs import result_line
from extproc.lifecycle import data_stack
from extproc.lifecycle.settings import LocalSettings


def test_a_built_layer_has_the_packages_and_the_pth_file(built_data_stack: Path) -> None:
    assert built_data_stack.name == f"data-stack-{data_stack.digest()[:16]}"
    packages = data_stack.packages(built_data_stack)
    for name in ("numpy", "pandas", "matplotlib", "seaborn", "scipy", "sklearn", "plotly",
                 "requests", "openpyxl", "bash_kernel", "ipykernel"):  # fmt: skip
        assert (packages / name / "__init__.py").is_file(), name
    pth = built_data_stack / data_stack.PTH_INSIDE.lstrip("/")
    assert pth.read_text() == f"{data_stack.INSIDE}\n"
    # Read-only inside a sandbox, so imports must find compiled bytecode already there.
    assert list((packages / "pandas" / "__pycache__").glob("*.cpython-311.pyc"))
    # World-readable: sandboxes read it as an unprivileged host uid.
    found = subprocess.run(
        ["find", str(built_data_stack), "!", "-perm", "-o=r", "-print", "-quit"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert found.stdout == ""


def test_the_digest_follows_the_lock() -> None:
    lock = data_stack.LOCK.read_text()
    assert data_stack.digest(lock) == data_stack.digest()
    assert data_stack.digest(lock.replace("pandas==2.3.3", "pandas==2.3.2")) != data_stack.digest()


def test_every_requirement_is_pinned_with_hashes() -> None:
    entries = data_stack.LOCK.read_text().split("\n")
    pins = [line for line in entries if line and not line.startswith((" ", "#"))]
    assert len(pins) > 50
    assert all("==" in pin and pin.endswith("\\") for pin in pins)


def test_sandboxes_use_the_stack_only_once_built(tmp_path: Path) -> None:
    settings = LocalSettings(state_dir=tmp_path, rootfs_cache_dir=tmp_path / "cache")
    assert data_stack.for_sandboxes(settings) is None
    built = data_stack.target(tmp_path / "cache")
    built.mkdir(parents=True)
    assert data_stack.for_sandboxes(settings) == built
    # Inside a sandbox the .pth file puts the stack on the path; on the host, the flag does.
    assert data_stack.interpreter_flags(built, isolated=True) == ["--kernel-pythonpath", ""]
    assert data_stack.interpreter_flags(built, isolated=False) == [
        "--kernel-pythonpath", str(built / "opt/agentcube/data-stack"),
    ]  # fmt: skip
    assert data_stack.interpreter_flags(None, isolated=True) == []


def test_chart_and_data_keys() -> None:
    line = result_line({CHART_MIME: {"type": "bar"}, DATA_MIME: {"a": [1]}}, is_main_result=True)
    assert line == {"type": "result", "is_main_result": True, "chart": {"type": "bar"},
                    "data": {"a": [1]}}  # fmt: skip


@pytest.mark.parametrize(
    ("given", "language"),
    [(None, "python"), ("", "python"), (" Bash ", "bash"), ("js", "javascript"),
     ("TS", "typescript"), ("r", "r")],
)  # fmt: skip
def test_language_names(given: str | None, language: str) -> None:
    assert normalize(given) == language


def test_bash_env_code_quotes_everything() -> None:
    value = 'a\'b $(touch /tmp/pwned) `id` \\ \n"c"'
    code = env_code.set_for_execution("bash", {"V": value, "W": "w"})
    script = f'{code}\nprintf \'%s|%s\' "$V" "$W"\n{env_code.restore("bash")}'
    script += 'printf "|%s|%s" "${V-unset}" "${W-unset}"'
    done = subprocess.run(["bash", "-c", f"V=old\n{script}"], capture_output=True, text=True)
    assert done.stdout == f"{value}|w|old|unset"
    assert not Path("/tmp/pwned").exists()


@pytest.mark.parametrize(
    ("language", "env"),
    [("bash", {"A-B": "x"}), ("bash", {"1A": "x"}), ("python", {"A=B": "x"}),
     ("python", {"A": "nul\0"}), ("python", {"": "x"}), ("r", {"A": "x"})],
)  # fmt: skip
def test_env_vars_a_kernel_cannot_take_are_refused(language: str, env: dict[str, str]) -> None:
    with pytest.raises(InvalidArgument):
        env_code.check(language, env)


def test_sandbox_env_vars_bash_cannot_take_are_left_out() -> None:
    code = env_code.set_for_kernel("bash", {"GOOD": "1", "BAD-NAME": "2"})
    assert code == "export GOOD=1\n"
