"""k8s/sandbox-image/start.sh: picod and the interpreter get the same binding file.

The script runs as it is, but with a stand-in for the image's `agentcube-e2b` that records
the flags and environment each daemon would start with, then exits.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

START_SH = Path(__file__).parents[2] / "k8s" / "sandbox-image" / "start.sh"
IMAGE_BIN = "bin=/opt/agentcube-e2b/venv/bin/agentcube-e2b\n"
IMAGE_STATE_DIR = Path("/run/agentcube-e2b")
# start.sh stops the other daemon when one exits: each record must still be written whole.
RECORDER = """#!/bin/bash
trap '' TERM
"$RECORD_PYTHON" -c '
import json, os, sys
keep = ("AGENTCUBE_E2B_", "PICOD_")
env = {k: v for k, v in os.environ.items() if k.startswith(keep)}
with open(os.path.join(os.environ["RECORD_DIR"], sys.argv[1]), "w") as f:
    json.dump({"argv": sys.argv[1:], "env": env}, f)
' "$@"
"""


def run_start(tmp_path: Path, **env: str) -> dict[str, dict[str, object]]:
    """Run start.sh with `env` (plus PATH, TMPDIR and the recorder's); what each daemon got."""
    script = START_SH.read_text()
    assert IMAGE_BIN in script
    recorder = tmp_path / "agentcube-e2b"
    recorder.write_text(RECORDER)
    recorder.chmod(0o755)
    start = tmp_path / "start.sh"
    start.write_text(script.replace(IMAGE_BIN, f"bin={recorder}\n"))
    records = tmp_path / "records"
    records.mkdir()
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    full_env = {
        "PATH": os.environ["PATH"],
        "TMPDIR": str(temporary),
        "RECORD_DIR": str(records),
        "RECORD_PYTHON": sys.executable,
        **env,
    }
    done = subprocess.run(
        ["/bin/bash", str(start)], env=full_env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return {path.name: json.loads(path.read_text()) for path in records.iterdir()}


def daemon_env(records: dict[str, dict[str, object]], daemon: str) -> dict[str, str]:
    env = records[daemon]["env"]
    assert isinstance(env, dict)
    return env


def test_a_warm_pod_shares_picods_state_dir_with_the_interpreter(tmp_path: Path) -> None:
    records = run_start(tmp_path, PICOD_AUTH_PUBLIC_KEY="-----BEGIN PUBLIC KEY-----")
    assert set(records) == {"picod", "interpreter"}
    picod, interpreter = daemon_env(records, "picod"), daemon_env(records, "interpreter")
    state = Path(picod["AGENTCUBE_E2B_PICOD_STATE_DIR"])
    assert interpreter["AGENTCUBE_E2B_PICOD_STATE_DIR"] == str(state)
    assert interpreter["AGENTCUBE_E2B_INTERPRETER_BINDING_FILE"] == str(state / "binding.json")
    if not os.access(IMAGE_STATE_DIR, os.W_OK):
        # This host is not the image: a private directory of its own instead.
        assert state.parent == tmp_path / "tmp"
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
    else:
        assert state == IMAGE_STATE_DIR
    # A warm pod: no sandbox id for either, so the interpreter waits for the binding.
    assert "AGENTCUBE_E2B_INTERPRETER_SANDBOX_ID" not in interpreter
    assert interpreter["AGENTCUBE_E2B_INTERPRETER_JWT_PUBLIC_KEY"]
    assert records["interpreter"]["argv"][0] == "interpreter"


@pytest.mark.parametrize("binding_file", [None, "/elsewhere/binding.json"])
def test_a_state_dir_the_template_sets_is_kept(tmp_path: Path, binding_file: str | None) -> None:
    env = {"AGENTCUBE_E2B_PICOD_STATE_DIR": "/workspace/.picod"}
    if binding_file is not None:
        env["AGENTCUBE_E2B_INTERPRETER_BINDING_FILE"] = binding_file
    records = run_start(tmp_path, **env)
    assert daemon_env(records, "picod")["AGENTCUBE_E2B_PICOD_STATE_DIR"] == "/workspace/.picod"
    expected = binding_file or "/workspace/.picod/binding.json"
    assert daemon_env(records, "interpreter")["AGENTCUBE_E2B_INTERPRETER_BINDING_FILE"] == expected


def test_a_cold_pod_passes_its_sandbox_id_to_both(tmp_path: Path) -> None:
    records = run_start(
        tmp_path,
        AGENTCUBE_E2B_PICOD_SANDBOX_ID="a" * 20,
        AGENTCUBE_E2B_PICOD_ACCESS_TOKEN="tok",
    )
    interpreter = daemon_env(records, "interpreter")
    assert interpreter["AGENTCUBE_E2B_INTERPRETER_SANDBOX_ID"] == "a" * 20
    assert interpreter["AGENTCUBE_E2B_INTERPRETER_ACCESS_TOKEN"] == "tok"


def test_without_the_interpreter_only_picod_starts(tmp_path: Path) -> None:
    records = run_start(tmp_path, AGENTCUBE_E2B_INTERPRETER="off")
    assert set(records) == {"picod"}
