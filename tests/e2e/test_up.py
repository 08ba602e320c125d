"""`agentcube-e2b up` itself: a clean stop leaves no process, a failing child stops the rest."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import httpx
import pytest
from e2b import Sandbox

from e2e.conftest import CLI, free_port, start_up, stop_up
from extproc.envoy_config.settings import HostPort
from extproc.up import UpSettings, plan_edges
from support.processes import wait_until


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
        argv = [*CLI, "up", "--state-dir", str(state), "--edge-processes", "2"]
        for flag, port in ports.items():
            argv += [f"--{flag.replace('_', '-')}", f"127.0.0.1:{port}"]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=90, check=False)
    assert result.returncode == 1
    assert "ready" not in result.stdout
    assert "[up] edge-1 exited with status" in result.stderr
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


def _edge_hosts(admin: int) -> dict[str, dict[str, str]]:
    """Envoy's view of the edge cluster: host -> {stat or flag: value} (admin /clusters)."""
    hosts: dict[str, dict[str, str]] = {}
    for line in httpx.get(f"http://127.0.0.1:{admin}/clusters", timeout=5).text.splitlines():
        parts = line.split("::")
        if len(parts) == 4 and parts[0] == "edge" and parts[1][0].isdigit():
            hosts.setdefault(parts[1], {})[parts[2]] = parts[3]
    return hosts


@pytest.mark.timeout(120)
def test_two_edges_share_the_checks_and_either_one_dying_stops_up(tmp_path: Path) -> None:
    state, log = tmp_path / "state", tmp_path / "up.log"
    ports = _ports()
    env = {**os.environ, "AGENTCUBE_E2B_UP_EDGE_PROCESSES": "2"}
    process, exports = start_up(state, log, env=env, **ports)
    try:
        hosts = _edge_hosts(ports["admin"])
        assert len(hosts) == 2
        assert all(host["health_flags"] == "healthy" for host in hosts.values())
        key = exports.split("E2B_API_KEY=")[1].split()[0]
        url = f"http://127.0.0.1:{ports['listen']}/v2/sandboxes"

        def both_edges_answer() -> bool:
            # concurrent platform calls; Envoy's workers may take a few seconds after the
            # health checks pass to balance onto the second edge
            load = subprocess.run(
                ["h2load", "-n", "200", "-c", "4", "-m", "4", "-H", f"x-api-key: {key}", url],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            ).stdout
            assert "200 2xx" in load, load
            return all(int(h["rq_success"]) > 0 for h in _edge_hosts(ports["admin"]).values())

        wait_until(both_edges_answer, 30)
        second = next(h for h in hosts if HostPort.parse(h).port != ports["edge_listen"])
        (pid,) = (
            int(line.split(":", 1)[0])
            for line in _processes_mentioning(f"--listen {second}")
            if " edge " in line
        )
        os.kill(pid, signal.SIGKILL)
        assert process.wait(timeout=60) == 1
    finally:
        if process.poll() is None:
            stop_up(process)
        elif process.stdout is not None:
            process.stdout.close()
    wait_until(lambda: "stopped" in log.read_text(), 10)
    assert "[up] edge-2 was killed by signal 9; stopping the others" in log.read_text()
    assert _processes_mentioning(str(state)) == []


def _settings(**changes: object) -> UpSettings:
    base: dict[str, object] = {
        "listen": HostPort("127.0.0.1", 8081),
        "domain": "e2b.localhost",
        "state_dir": Path("state"),
        "admin": HostPort("127.0.0.1", 9901),
        "edge": HostPort("127.0.0.1", 9001),
        "metrics": HostPort("127.0.0.1", 9091),
        "lifecycle": HostPort("127.0.0.1", 9002),
    }
    return UpSettings(**{**base, **changes})  # type: ignore[arg-type]


def test_edge_plan_names_ports_and_metrics() -> None:
    (only,) = plan_edges(_settings())
    assert (only.name, str(only.listen), str(only.metrics)) == (
        "edge",
        "127.0.0.1:9001",
        "127.0.0.1:9091",
    )
    edges = plan_edges(_settings(edge_processes=3))
    assert [edge.name for edge in edges] == ["edge-1", "edge-2", "edge-3"]
    assert [edge.metrics.port for edge in edges] == [9091, 9092, 9093]
    assert edges[0].listen == HostPort("127.0.0.1", 9001)
    assert len({edge.listen for edge in edges}) == 3


def test_edge_plan_refuses_a_metrics_port_another_flag_uses() -> None:
    with pytest.raises(ValueError, match=r"edge 2 would serve metrics on 127\.0\.0\.1:9002"):
        plan_edges(_settings(metrics=HostPort("127.0.0.1", 9001), edge_processes=2))


def test_up_rejects_zero_edge_processes(tmp_path: Path) -> None:
    result = subprocess.run(
        [*CLI, "up", "--state-dir", str(tmp_path), "--edge-processes", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--edge-processes: expected >= 1, got 0" in result.stderr
