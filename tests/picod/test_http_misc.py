"""envd's plain HTTP endpoints, CORS, the 404/405 shape, and shutdown of children."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from e2b import Sandbox

if TYPE_CHECKING:
    from conftest import PicodProcess


def test_health(picod_sdk_env: PicodProcess, http: httpx.Client) -> None:
    response = http.get(f"{picod_sdk_env.url}/health")
    assert (response.status_code, response.content) == (204, b"")
    assert http.post(f"{picod_sdk_env.url}/health").status_code == 405


def test_unknown_route_is_json_404(picod_sdk_env: PicodProcess, http: httpx.Client) -> None:
    response = http.get(f"{picod_sdk_env.url}/nope")
    assert response.status_code == 404
    assert response.json()["code"] == 404
    assert isinstance(response.json()["message"], str)


def test_metrics(picod_sdk_env: PicodProcess, http: httpx.Client) -> None:
    metrics = http.get(f"{picod_sdk_env.url}/metrics").json()
    ints = ("ts", "cpu_count", "mem_total", "mem_used", "mem_cache", "mem_total_mib")
    assert all(isinstance(metrics[k], int) for k in ints)
    assert isinstance(metrics["cpu_used_pct"], float)
    assert 0 < metrics["disk_used"] <= metrics["disk_total"]
    assert metrics["mem_total_mib"] == metrics["mem_total"] // (1024 * 1024)
    assert 0 <= metrics["cpu_used_pct"] <= 100


def test_cors(picod_sdk_env: PicodProcess, http: httpx.Client) -> None:
    preflight = http.options(
        f"{picod_sdk_env.url}/process.Process/Start",
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "connect-protocol-version, x-access-token",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "x-access-token" in preflight.headers["access-control-allow-headers"]
    plain = http.get(f"{picod_sdk_env.url}/health", headers={"Origin": "https://a.example"})
    assert plain.headers["access-control-allow-origin"] == "*"
    assert "Connect-Protocol-Version" in plain.headers["access-control-expose-headers"]


def test_init_and_envs(
    start_picod: Callable[..., PicodProcess],
    sdk_sandbox: Callable[..., Sandbox],
    http: httpx.Client,
) -> None:
    picod = start_picod(no_auth=True, env=["FROM_FLAG=1"])
    assert http.get(f"{picod.url}/envs").json() == {"FROM_FLAG": "1"}
    for bad in (b"{nope", b"[]", b'{"envVars": {"A": 1}}', b'{"defaultWorkdir": "rel"}'):
        response = http.post(f"{picod.url}/init", content=bad)
        assert response.status_code == 400
        assert response.json()["code"] == 400
    workdir = picod.home / "work"
    workdir.mkdir()
    response = http.post(
        f"{picod.url}/init",
        json={"envVars": {"A": "b"}, "defaultWorkdir": str(workdir), "accessToken": "ignored"},
    )
    assert response.status_code == 204
    assert response.headers["x-envd-version"] == "0.6.4"
    assert http.get(f"{picod.url}/envs").json() == {"FROM_FLAG": "1", "A": "b"}
    assert sdk_sandbox(picod.url, {}).commands.run("pwd").stdout == f"{workdir}\n"
    assert http.get(f"{picod.url}/init").status_code == 405


def test_sigterm_stops_children(
    start_picod: Callable[..., PicodProcess],
    sdk_sandbox: Callable[..., Sandbox],
    tmp_path: Path,
) -> None:
    picod = start_picod(no_auth=True)
    marker = tmp_path / "pid"
    sandbox = sdk_sandbox(picod.url, {})
    handle = sandbox.commands.run(f"echo $$ > {marker}; exec sleep 60", background=True)
    assert handle.pid == int(sandbox.commands.run(f"cat {marker}").stdout)
    assert picod.stop() == 0
    try:
        os.kill(handle.pid, 0)
    except ProcessLookupError:
        pass
    else:  # still there: a zombie of nobody would be "gone" too, so check its state
        state = Path(f"/proc/{handle.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        os.kill(handle.pid, signal.SIGKILL)
        raise AssertionError(f"child {handle.pid} survived picod (state {state})")


def test_home_is_created(start_picod: Callable[..., PicodProcess], tmp_path: Path) -> None:
    home = tmp_path / "deep" / "home"
    picod = start_picod(no_auth=True, home=home)
    assert picod.home == home
    assert home.is_dir()
