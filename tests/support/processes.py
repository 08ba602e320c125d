"""Free loopback ports and daemon subprocesses that are ready once GET /health answers."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def environ_without(prefix: str) -> dict[str, str]:
    """This process's environment minus the variables starting with `prefix`."""
    return {k: v for k, v in os.environ.items() if not k.startswith(prefix)}


def spawn_logged(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start `argv` in its own session, stdout and stderr both written to `log`."""
    with log.open("wb") as sink:
        return subprocess.Popen(
            argv,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )


class NotHealthy(RuntimeError):
    """The process exited, or did not answer GET /health as expected in time."""


def wait_healthy(
    proc: subprocess.Popen[bytes], url: str, status: int, *, timeout_s: float, interval_s: float
) -> None:
    """Return once GET `url` answers `status`; raise NotHealthy saying why not (callers stop
    the process and add its output)."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=1) as client:
        while True:
            if proc.poll() is not None:
                raise NotHealthy(f"exited with {proc.returncode}")
            try:
                if client.get(url).status_code == status:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise NotHealthy("did not become healthy")
            time.sleep(interval_s)  # polling a port that is not open yet: nothing to await


def wait_until(
    predicate: Callable[[], object], timeout_s: float, interval_s: float = 0.05
) -> float:
    """Seconds until `predicate()` was true; polls a remote state no event reports."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"not true within {timeout_s} s")
        time.sleep(interval_s)
    return time.monotonic() - start
