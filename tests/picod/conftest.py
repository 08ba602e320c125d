"""Fixtures that run real `agentcube-e2b picod` subprocesses for the SDK to drive.

`picod_sdk_env` is the session's picod on 127.0.0.1:49983 without auth: the SDK's debug
mode talks to http://localhost:49983 with envd version 99.99.99 and no token.
`start_picod(**flags)` starts more picods (for auth) on free ports; `sdk_sandbox` builds
SDK Sandbox objects against any of them with chosen headers.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2b import AsyncSandbox, ConnectionConfig, Sandbox
from packaging.version import Version

from support.processes import NotHealthy, environ_without, free_port, spawn_logged, wait_healthy

PICOD = str(Path(sys.executable).with_name("agentcube-e2b"))
SDK_PORT = 49983
START_TIMEOUT_SECONDS = 15.0


@dataclass
class PicodProcess:
    url: str
    home: Path
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    flags: dict[str, Any] = field(default_factory=dict)

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM (picod stops its children), then SIGKILL the group if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode


def _argv(flags: dict[str, Any]) -> list[str]:
    argv: list[str] = []
    for name, value in flags.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif isinstance(value, list | tuple):
            for item in value:
                argv += [flag, str(item)]
        elif value is not None and value is not False:
            argv += [flag, str(value)]
    return argv


def launch_picod(tmp: Path, port: int, **flags: Any) -> PicodProcess:
    home = Path(flags.pop("home", tmp / "home"))
    log = tmp / f"picod-{port}.log"
    argv = [PICOD, "picod", "--listen", f"127.0.0.1:{port}", "--home", str(home), *_argv(flags)]
    proc = spawn_logged(argv, log, environ_without("AGENTCUBE_E2B_PICOD_"))
    picod = PicodProcess(f"http://127.0.0.1:{port}", home, port, proc, log, flags)
    try:
        wait_healthy(
            proc, f"{picod.url}/health", 204, timeout_s=START_TIMEOUT_SECONDS, interval_s=0.01
        )
    except NotHealthy as e:
        picod.stop()  # no-op if it exited
        raise RuntimeError(f"picod {e}:\n{picod.stderr()}") from None
    return picod


def _require_free_port(port: int) -> None:
    """Fail now if something already listens on `port`: its answers would not be ours.

    Both loopbacks count: the SDK's debug mode dials `localhost`, which may resolve to ::1.
    """
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        with socket.socket(family) as s:
            # As the server will: a TIME_WAIT left by an earlier run must not count as bound.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError as e:
                if e.errno != errno.EADDRINUSE:
                    continue  # no IPv6 loopback here: nothing can listen there either
                where = f"[{host}]" if family == socket.AF_INET6 else host
                pytest.fail(
                    f"{where}:{port} is already bound: another server holds the port the "
                    "SDK's debug mode talks to, so these tests would drive it instead of this "
                    "checkout's picod. Stop it, or run the tests in a private network "
                    "namespace: unshare --net sh -c 'ip link set lo up; pytest tests/picod'",
                    pytrace=False,
                )


def _owns_listener(pid: int, port: int) -> bool:
    """Whether process `pid` holds a socket listening on TCP `port` (Linux /proc)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local_port = int(fields[1].rpartition(":")[2], 16)
                if local_port == port and fields[3] == "0A":  # 0A: TCP_LISTEN
                    inodes.add(f"socket:[{fields[9]}]")
    fd_dir = Path(f"/proc/{pid}/fd")
    with contextlib.suppress(FileNotFoundError):
        for fd in fd_dir.iterdir():
            with contextlib.suppress(OSError):
                if str(fd.readlink()) in inodes:
                    return True
    return False


@pytest.fixture(scope="session")
def picod_sdk_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PicodProcess]:
    _require_free_port(SDK_PORT)
    picod = launch_picod(tmp_path_factory.mktemp("picod-sdk"), SDK_PORT, no_auth=True)
    # /health may have been answered by a server that grabbed the port after the check
    # above while picod was still importing: make sure the listener is picod's own.
    if picod.proc.poll() is not None or not _owns_listener(picod.proc.pid, SDK_PORT):
        picod.stop()
        pytest.fail(
            f"another process serves 127.0.0.1:{SDK_PORT}, not the picod this session started "
            f"(pid {picod.proc.pid}, exit code {picod.proc.returncode}):\n{picod.stderr()}",
            pytrace=False,
        )
    yield picod
    code = picod.stop()
    if code != 0:
        print(f"session picod exited with {code}:\n{picod.stderr()}", file=sys.stderr)


@pytest.fixture(scope="session")
def http() -> Iterator[httpx.Client]:
    """One client for raw requests (a new httpx client costs ~0.2 s of TLS setup)."""
    with httpx.Client(timeout=30) as client:
        yield client


@pytest.fixture
def sync_sandbox(picod_sdk_env: PicodProcess) -> Sandbox:
    return Sandbox.create(debug=True)


@pytest.fixture
async def async_sandbox(picod_sdk_env: PicodProcess) -> AsyncIterator[AsyncSandbox]:
    yield await AsyncSandbox.create(debug=True)


@pytest.fixture
def workdir(picod_sdk_env: PicodProcess) -> str:
    """A fresh directory name, relative to the session picod user's home."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    (picod_sdk_env.home / name).mkdir(parents=True)
    return name


@pytest.fixture
def start_picod(tmp_path: Path) -> Iterator[Callable[..., PicodProcess]]:
    started: list[PicodProcess] = []

    def start(**flags: Any) -> PicodProcess:
        where = tmp_path / f"p{len(started)}"
        where.mkdir(exist_ok=True)
        picod = launch_picod(where, free_port(), **flags)
        started.append(picod)
        return picod

    yield start
    for picod in started:
        picod.stop()


def _sandbox_opts(url: str, headers: dict[str, str], version: str) -> dict[str, Any]:
    return {
        "sandbox_id": "sbxtest",
        "sandbox_domain": None,
        "envd_version": Version(version),
        "envd_access_token": headers.get("X-Access-Token"),
        "traffic_access_token": None,
        "connection_config": ConnectionConfig(sandbox_url=url, extra_sandbox_headers=headers),
    }


@pytest.fixture
def sdk_sandbox() -> Callable[..., Sandbox]:
    """A sync SDK Sandbox for a picod at `url` sending `headers` on every envd call."""

    def make(url: str, headers: dict[str, str], version: str = "0.6.4") -> Sandbox:
        return Sandbox(**_sandbox_opts(url, headers, version))

    return make


@pytest.fixture
def async_sdk_sandbox() -> Callable[..., AsyncSandbox]:
    def make(url: str, headers: dict[str, str], version: str = "0.6.4") -> AsyncSandbox:
        return AsyncSandbox(**_sandbox_opts(url, headers, version))

    return make
