"""`agentcube-e2b up` itself: a clean stop leaves no process, a failing child stops the rest."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest
from e2b import Sandbox

from e2e.conftest import CLI, free_port, start_up, stop_up


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{entry.name}: {cmdline}")
    return found


def _ports() -> dict[str, int]:
    names = ("listen", "admin", "edge_listen", "metrics_listen", "lifecycle_listen")
    return {name: free_port() for name in names}


@pytest.mark.timeout(120)
def test_sigterm_stops_everything_and_a_restart_keeps_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state, log = tmp_path / "state", tmp_path / "up.log"
    ports = _ports()
    process, exports = start_up(state, log, **ports)
    try:
        values = dict(item.split("=", 1) for item in exports.split()[1:] if "=" in item)
        assert set(values) == {"E2B_API_URL", "E2B_SANDBOX_URL", "E2B_DOMAIN", "E2B_API_KEY"}
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        sbx = Sandbox.create(timeout=120)  # a picod that must go away too
        assert sbx.commands.run("echo up").stdout == "up\n"
        assert _processes_mentioning(str(state))
    finally:
        assert stop_up(process) == 0
    assert _processes_mentioning(str(state)) == []
    # the state directory is reused: no new key, and a hint how to make one
    process, exports = start_up(state, log, **ports)
    assert stop_up(process) == 0
    assert "E2B_API_KEY" not in exports.splitlines()[0]
    assert "agentcube-e2b keys create" in exports
    assert _processes_mentioning(str(state)) == []


@pytest.mark.timeout(120)
def test_a_child_that_fails_stops_the_rest_with_a_readable_error(tmp_path: Path) -> None:
    state = tmp_path / "state"
    ports = _ports()
    with socket.socket() as taken:
        # the edge cannot bind its port, so it exits during startup
        taken.bind(("127.0.0.1", ports["edge_listen"]))
        taken.listen()
        argv = [*CLI, "up", "--state-dir", str(state)]
        for flag, port in ports.items():
            argv += [f"--{flag.replace('_', '-')}", f"127.0.0.1:{port}"]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=90, check=False)
    assert result.returncode == 1
    assert "ready" not in result.stdout
    assert "[up] edge exited with status" in result.stderr
    assert _processes_mentioning(str(state)) == []


def test_up_rejects_a_public_admin_address(tmp_path: Path) -> None:
    result = subprocess.run(
        [*CLI, "up", "--state-dir", str(tmp_path), "--admin", "0.0.0.0:9901"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "admin must listen on a loopback IP" in result.stderr
