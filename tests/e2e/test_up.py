"""`agentcube-e2b up` itself: a clean stop leaves no process, a child failing at startup stops
the rest, one dying later is restarted alone (tests/faults has the SDK-level faults), and
nothing of the control plane is reachable but through its private sockets."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import stat
import subprocess
from pathlib import Path

import grpc
import httpx
import pytest
from e2b import Sandbox
from grpc_health.v1 import health_pb2, health_pb2_grpc

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2_grpc as pb_grpc
from extproc.envoy_config.settings import HostPort, UnixSocket
from extproc.up import UpSettings, plan_edges, prepare_run_dir, register, settings_from
from support.gateway import (
    CLI,
    envoy_admin,
    lifecycle_metadata,
    lifecycle_target,
    run_dir,
    start_up,
    stop_up,
)
from support.processes import free_port, wait_until


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
    """Every address as TCP: what an operator who wants TCP gets."""
    names = ("listen", "admin", "edge_listen", "metrics_listen", "lifecycle_listen")
    return {name: free_port() for name in names}


@pytest.mark.timeout(120)
def test_sigterm_stops_everything_and_a_restart_keeps_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state, log = tmp_path / "state", tmp_path / "up.log"
    ports = {"listen": free_port()}
    process, exports = start_up(state, log, **ports)
    try:
        values = dict(item.split("=", 1) for item in exports.split()[1:] if "=" in item)
        assert set(values) == {
            "E2B_API_URL",
            "E2B_SANDBOX_URL",
            "E2B_VOLUME_API_URL",
            "E2B_DOMAIN",
            "E2B_API_KEY",
        }
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        sbx = Sandbox.create(timeout=120)  # a picod that must go away too
        assert sbx.commands.run("echo up").stdout == "up\n"
        assert _processes_mentioning(str(state))
    finally:
        assert stop_up(process) == 0
    assert _processes_mentioning(str(state)) == []
    assert sorted(run_dir(state).iterdir()) == []  # no socket, no token left behind
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
    assert "edge-1 exited with status" in result.stderr
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


def _edge_hosts(state: Path) -> dict[str, dict[str, str]]:
    """Envoy's view of the edge cluster: host (a socket path) -> {stat or flag: value}."""
    hosts: dict[str, dict[str, str]] = {}
    with envoy_admin(state) as admin:
        text = admin.get("/clusters").text
    for line in text.splitlines():
        parts = line.split("::")
        if len(parts) == 4 and parts[0] == "edge" and parts[1].startswith("/"):
            hosts.setdefault(parts[1], {})[parts[2]] = parts[3]
    return hosts


@pytest.mark.timeout(120)
def test_two_edges_share_the_checks_and_either_one_dying_is_restarted_alone(
    tmp_path: Path,
) -> None:
    state, log = tmp_path / "state", tmp_path / "up.log"
    ports = {"listen": free_port()}
    env = {**os.environ, "AGENTCUBE_E2B_UP_EDGE_PROCESSES": "2"}
    process, exports = start_up(state, log, env=env, **ports)
    try:
        hosts = _edge_hosts(state)
        assert sorted(hosts) == [str(run_dir(state) / f"edge-{n}.sock") for n in (1, 2)]
        for n in (1, 2):
            assert (run_dir(state) / f"metrics-{n}.sock").is_socket()
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
            return all(int(h["rq_success"]) > 0 for h in _edge_hosts(state).values())

        wait_until(both_edges_answer, 30)
        second = str(run_dir(state) / "edge-2.sock")
        (pid,) = (
            int(line.split(":", 1)[0])
            for line in _processes_mentioning(f"--listen unix:{second}")
            if " edge " in line
        )
        os.kill(pid, signal.SIGKILL)
        # restarted alone: up and the first edge keep running, and Envoy sees both again
        wait_until(lambda: "edge-2 serves again" in log.read_text(), 30)
        assert process.poll() is None
        wait_until(
            lambda: all(h["health_flags"] == "healthy" for h in _edge_hosts(state).values()), 30
        )
        assert len(_edge_hosts(state)) == 2
    finally:
        code = stop_up(process) if process.poll() is None else process.returncode
        if process.stdout is not None:
            process.stdout.close()
    assert code == 0
    assert "edge-2 was killed by signal 9; restarting it in 0.1 s" in log.read_text()
    assert _processes_mentioning(str(state)) == []


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(child) for child in (task / "children").read_text().split())
    return found


def _listening_tcp_inodes() -> dict[int, int]:
    """inode -> port of every TCP socket listening in this network namespace."""
    listening = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # TCP_LISTEN
                listening[int(fields[9])] = int(fields[1].rsplit(":", 1)[1], 16)
    return listening


def _tcp_ports_listened_by(pids: set[int]) -> set[int]:
    listening = _listening_tcp_inodes()
    ports = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = str(fd.readlink())
            except OSError:
                continue
            if target.startswith("socket:["):
                inode = int(target[len("socket:[") : -1])
                if inode in listening:
                    ports.add(listening[inode])
    return ports


async def _lifecycle_calls(state: Path) -> None:
    async with grpc.aio.insecure_channel(lifecycle_target(state)) as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        sandboxes = pb_grpc.SandboxServiceStub(channel)
        for metadata in ((), (("authorization", "Bearer " + "0" * 64),)):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await sandboxes.ListSandboxes(
                    pb.ListSandboxesRequest(tenant="default"), metadata=metadata
                )
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, metadata
        with pytest.raises(grpc.aio.AioRpcError) as info:  # the token is not the scope
            await sandboxes.ListSandboxes(
                pb.ListSandboxesRequest(), metadata=lifecycle_metadata(state)
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        listed = await sandboxes.ListSandboxes(
            pb.ListSandboxesRequest(tenant="default"), metadata=lifecycle_metadata(state)
        )
        assert all(s.tenant == "default" for s in listed.sandboxes)


@pytest.mark.timeout(120)
def test_the_control_plane_listens_only_on_private_unix_sockets(tmp_path: Path) -> None:
    state, log = tmp_path / "state", tmp_path / "up.log"
    listen = free_port()
    env = {**os.environ, "AGENTCUBE_E2B_UP_EDGE_PROCESSES": "1"}
    process, _ = start_up(state, log, env=env, listen=listen)
    try:
        run = run_dir(state)
        info = run.lstat()
        assert stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o700
        assert info.st_uid == os.getuid()
        for name in ("lifecycle.sock", "edge.sock", "metrics.sock", "envoy-admin.sock"):
            mode = (run / name).stat().st_mode
            assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600, name
        token_file = run / "lifecycle-token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        assert len(token) == 64 and int(token, 16) >= 0
        control_plane = {process.pid, *_children(process.pid)}
        assert len(control_plane) == 4  # up, lifecycle, edge, envoy
        # the public listener is the only TCP port of up and its children
        assert _tcp_ports_listened_by(control_plane) == {listen}
        for port in (9001, 9002, 9091, 9901):
            with socket.socket() as probe:
                assert probe.connect_ex(("127.0.0.1", port)) != 0, port
        for pid in control_plane:  # the token travels by path, never in argv
            assert token not in Path(f"/proc/{pid}/cmdline").read_bytes().decode()
        asyncio.run(_lifecycle_calls(state))
        with envoy_admin(state) as admin:
            assert admin.get("/ready").status_code == 200
        metrics = httpx.HTTPTransport(uds=str(run / "metrics.sock"))
        with httpx.Client(transport=metrics, base_url="http://edge") as client:
            assert "agentcube_e2b_edge_decisions" in client.get("/metrics").text
    finally:
        assert stop_up(process) == 0


def test_the_run_dir_is_made_private_and_must_be_ours(tmp_path: Path) -> None:
    run = tmp_path / "state" / "run"
    prepare_run_dir(run)
    assert stat.S_IMODE(run.stat().st_mode) == 0o700
    run.chmod(0o755)
    prepare_run_dir(run)
    assert stat.S_IMODE(run.stat().st_mode) == 0o700
    link = tmp_path / "elsewhere" / "run"
    link.parent.mkdir()
    link.symlink_to(run)
    with pytest.raises(ValueError, match="is not a directory"):
        prepare_run_dir(link)


@pytest.mark.skipif(os.getuid() != 0, reason="giving a directory to another user needs root")
def test_up_refuses_a_run_dir_of_another_user(tmp_path: Path) -> None:
    run = tmp_path / "state" / "run"
    run.mkdir(parents=True, mode=0o700)
    os.chown(run, 65534, 65534)
    result = subprocess.run(
        [*CLI, "up", "--state-dir", str(tmp_path / "state")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "belongs to uid 65534" in result.stderr


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


def test_edge_plan_numbers_unix_sockets() -> None:
    run = Path("/srv/state/run")
    sockets = {
        "edge": UnixSocket(run / "edge.sock"),
        "metrics": UnixSocket(run / "metrics.sock"),
        "admin": UnixSocket(run / "envoy-admin.sock"),
        "lifecycle": UnixSocket(run / "lifecycle.sock"),
    }
    (only,) = plan_edges(_settings(**sockets))
    assert (str(only.listen), str(only.metrics)) == (
        f"unix:{run}/edge.sock",
        f"unix:{run}/metrics.sock",
    )
    edges = plan_edges(_settings(**sockets, edge_processes=3))
    assert [str(edge.listen) for edge in edges] == [f"unix:{run}/edge-{n}.sock" for n in (1, 2, 3)]
    assert [str(edge.metrics) for edge in edges] == [
        f"unix:{run}/metrics-{n}.sock" for n in (1, 2, 3)
    ]


def test_up_defaults_to_sockets_under_the_state_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ADMIN", "EDGE_LISTEN", "METRICS_LISTEN", "LIFECYCLE_LISTEN", "ISOLATION"):
        monkeypatch.delenv(f"AGENTCUBE_E2B_UP_{name}", raising=False)
    parser = argparse.ArgumentParser()
    register(parser)
    settings = settings_from(parser.parse_args(["--state-dir", "/srv/state"]))
    run = Path("/srv/state/run")
    assert (settings.admin, settings.edge, settings.metrics, settings.lifecycle) == (
        UnixSocket(run / "envoy-admin.sock"),
        UnixSocket(run / "edge.sock"),
        UnixSocket(run / "metrics.sock"),
        UnixSocket(run / "lifecycle.sock"),
    )
    assert settings.listen == HostPort("127.0.0.1", 8081)
    assert settings.isolation == "namespaces"
    tcp = settings_from(parser.parse_args(["--lifecycle-listen", "127.0.0.1:9002"]))
    assert tcp.lifecycle == HostPort("127.0.0.1", 9002)
    with pytest.raises(ValueError, match=r"--admin: .*ABSOLUTE"):
        settings_from(parser.parse_args(["--admin", "unix:relative.sock"]))
