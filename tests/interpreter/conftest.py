"""Real `agentcube-e2b interpreter` processes (real ipykernel kernels) for the SDK to drive.

The SDK in debug mode needs no control plane; `sandbox_url` points it at our server on a
free port instead of localhost:49999, which other test runs on this machine may hold. Each
fixture checks that the process answering is its own: it has not exited, and a random
marker put in its environment comes back out of its kernel.
`interpreter` (no auth, sandbox env vars from a real picod's /envs) is shared by the
session; `secured` adds auth (access token and JWT), a 1 s execution timeout and 0.3 s
keepalives; `token_only` has the access token and no JWT key. `analyst` is `interpreter`
with the code-interpreter template's data stack as its kernels' packages (numpy, pandas,
matplotlib, bash_kernel, ...), built into the shared rootfs cache if `make rootfs` has not.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from e2b_code_interpreter import Sandbox

import support.rootfs  # noqa: F401 (the shared cache the data stack is built in)
from extproc.lifecycle import data_stack
from support.processes import NotHealthy, environ_without, free_port, spawn_logged, wait_healthy

CLI = str(Path(sys.executable).with_name("agentcube-e2b"))
START_TIMEOUT_SECONDS = 30.0
MARKER_ENV = "AGENTCUBE_TEST_MARKER"
SANDBOX_ENV = {"SANDBOX_LEVEL_VAR": "from-envd"}
SANDBOX_ID = "isecuredtest"
ACCESS_TOKEN = "token-" + uuid.uuid4().hex


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    marker: str

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def _serving(server: Server) -> Iterator[Server]:
    """Yield a started server; on teardown it must still be alive, and is stopped."""
    try:
        yield server
        assert server.alive(), server.output()
    finally:
        server.stop()


def launch(tmp: Path, command: str, *flags: str, ready_status: int) -> Server:
    port = free_port()
    log = tmp / f"{command}-{port}.log"
    marker = uuid.uuid4().hex
    env = environ_without("AGENTCUBE_E2B_")
    env[MARKER_ENV] = marker
    argv = [CLI, command, "--listen", f"127.0.0.1:{port}", *flags]
    server = Server(f"http://127.0.0.1:{port}", spawn_logged(argv, log, env), log, marker)
    try:
        wait_healthy(
            server.proc,
            f"{server.url}/health",
            ready_status,
            timeout_s=START_TIMEOUT_SECONDS,
            interval_s=0.02,
        )
    except NotHealthy as e:
        server.stop()  # no-op if it exited
        raise RuntimeError(f"{command} {e}:\n{server.output()}") from None
    return server


def sdk(server: Server) -> Sandbox:
    return Sandbox.create(debug=True, sandbox_url=server.url)


@pytest.fixture(scope="session")
def envd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real picod, whose GET /envs gives the interpreter the sandbox's env vars."""
    tmp = tmp_path_factory.mktemp("envd")
    env_flags = [f"--env={k}={v}" for k, v in SANDBOX_ENV.items()]
    picod = launch(tmp, "picod", "--no-auth", "--home", str(tmp), *env_flags, ready_status=204)
    yield picod
    picod.stop()


@pytest.fixture(scope="session")
def interpreter(tmp_path_factory: pytest.TempPathFactory, envd: Server) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("interpreter")
    server = launch(
        tmp,
        "interpreter",
        "--no-auth",
        "--cwd",
        str(tmp),
        "--envd-url",
        envd.url,
        "--max-output-bytes",
        "100000",
        ready_status=200,
    )
    try:
        marker = sdk(server).run_code(f"import os; os.environ[{MARKER_ENV!r}]").text
        assert marker == repr(server.marker), f"another process answers on {server.url}"
        yield server
        assert server.alive(), server.output()
    finally:
        server.stop()


@pytest.fixture
def sandbox(interpreter: Server) -> Iterator[Sandbox]:
    yield sdk(interpreter)
    assert interpreter.alive(), interpreter.output()


@pytest.fixture(scope="session")
def built_data_stack() -> Path:
    """The data stack layer (a first build downloads ~130 MiB: `make rootfs` does it)."""
    cache = Path(os.environ["AGENTCUBE_E2B_ROOTFS_CACHE_DIR"])
    return data_stack.ensure(cache, lambda line: print(line, flush=True))


@pytest.fixture(scope="session")
def analyst(
    tmp_path_factory: pytest.TempPathFactory, envd: Server, built_data_stack: Path
) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("analyst")
    yield from _serving(
        launch(
            tmp,
            "interpreter",
            "--no-auth",
            "--cwd",
            str(tmp),
            "--envd-url",
            envd.url,
            *data_stack.interpreter_flags(built_data_stack, isolated=False),
            ready_status=200,
        )
    )


@pytest.fixture
def analysis(analyst: Server) -> Iterator[Sandbox]:
    yield sdk(analyst)
    assert analyst.alive(), analyst.output()


@pytest.fixture(scope="session")
def gateway_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[rsa.RSAPrivateKey, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path_factory.mktemp("identity") / "public.pem"
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return key, path


@pytest.fixture(scope="session")
def secured(
    tmp_path_factory: pytest.TempPathFactory, gateway_key: tuple[rsa.RSAPrivateKey, Path]
) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("secured")
    yield from _serving(
        launch(
            tmp,
            "interpreter",
            "--access-token",
            ACCESS_TOKEN,
            "--jwt-public-key",
            str(gateway_key[1]),
            "--sandbox-id",
            SANDBOX_ID,
            "--cwd",
            str(tmp),
            "--envd-url",
            "",
            "--execution-timeout",
            "1",
            "--keepalive-interval",
            "0.3",
            ready_status=200,
        )
    )


@pytest.fixture(scope="session")
def token_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A secure sandbox's interpreter reached directly: the access token, no JWT key."""
    tmp = tmp_path_factory.mktemp("token-only")
    yield from _serving(
        launch(
            tmp,
            "interpreter",
            "--access-token",
            ACCESS_TOKEN,
            "--cwd",
            str(tmp),
            "--envd-url",
            "",
            ready_status=200,
        )
    )
