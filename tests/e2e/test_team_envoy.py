"""The official Python SDK through a platform team's own Envoy: the team's bootstrap
(tests/envoy/platform_team/bootstrap.yaml) with `envoy-config --fragment` merged in by the
recipe docs/envoy.md gives (support/fragment_merging.py), its filters calling `up`'s edge.

`up`'s own Envoy is not on this path. What the team's Envoy must do alone: send the platform
API and sandbox traffic through the edge, route to the sandbox the edge picks, and keep serving
the team's own hosts as before.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from e2b import Sandbox

from extproc.envoy_config.settings import UnixSocket
from extproc.lifecycle.networking import hub_netns_path
from support.fragment_merging import merged_bootstrap
from support.gateway import Gateway, envoy_argv, run_dir, sdk_environment
from support.processes import free_port


def _ready(admin: Path, process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    transport = httpx.HTTPTransport(uds=str(admin))
    deadline = time.monotonic() + timeout_s
    with httpx.Client(transport=transport, base_url="http://envoy") as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"the team's Envoy exited with {process.returncode}")
            # connecting before the socket exists would leak httpcore's socket
            if admin.exists() and client.get("/ready").status_code == 200:
                return
            time.sleep(0.1)
    raise AssertionError("the team's Envoy was not ready in time")


@pytest.fixture(scope="module")
def team_envoy(gateway: Gateway, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The merged bootstrap running; yields its listener port."""
    directory = tmp_path_factory.mktemp("team-envoy")
    listen = free_port()
    admin = directory / "admin.sock"
    document = merged_bootstrap(
        UnixSocket(run_dir(gateway.state_dir) / "edge.sock"),
        domain=gateway.domain,
        listen=listen,
        admin=admin,
        shop_web=free_port(),  # nothing listens: the team's backends are not under test
        shop_api=free_port(),
        # local sandboxes' addresses exist only in the lifecycle's hub network namespace
        sandbox_netns=hub_netns_path(gateway.state_dir / "lifecycle"),
    )
    config = directory / "envoy.yaml"
    config.write_text(yaml.safe_dump(document, sort_keys=False))
    with (directory / "envoy.log").open("wb") as log:
        process = subprocess.Popen(
            envoy_argv(config, concurrency=1, log_level="warning"),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        _ready(admin, process)
        yield listen
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def team_dns(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    """`*.<domain>` resolves to loopback, as the team's DNS would point it at their Envoy."""
    resolve = socket.getaddrinfo
    suffix = f".{gateway.domain}"

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.lower().endswith(suffix):
            host = "127.0.0.1"
        return resolve(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
def through_team_envoy(gateway: Gateway, team_envoy: int, team_dns: None) -> Iterator[None]:
    """The SDK pointed at the team's Envoy: the API and the sandboxes on the gateway's hosts."""
    env = {
        "E2B_API_URL": f"http://api.{gateway.domain}:{team_envoy}",
        "E2B_SANDBOX_URL": f"http://sandbox.{gateway.domain}:{team_envoy}",
    }
    with sdk_environment(env):
        yield


def test_the_sdk_runs_through_the_team_envoy(through_team_envoy: None) -> None:
    sandbox = Sandbox.create(metadata={"via": "team-envoy"}, timeout=120)
    try:
        result = sandbox.commands.run("echo hi; id -un")
        assert (result.exit_code, result.stdout) == (0, "hi\nuser\n")
        sandbox.files.write("team.txt", "merged")
        assert sandbox.files.read("team.txt") == "merged"
        listed = Sandbox.list().next_items()
        assert sandbox.sandbox_id in {item.sandbox_id for item in listed}
        assert sandbox.get_info().metadata == {"via": "team-envoy"}
    finally:
        sandbox.kill()
    assert not sandbox.is_running()


def test_the_team_envoy_refuses_what_the_edge_refuses(
    gateway: Gateway, team_envoy: int, team_dns: None
) -> None:
    with httpx.Client(timeout=10) as client:
        bad_key = client.get(
            f"http://api.{gateway.domain}:{team_envoy}/sandboxes",
            headers={"x-api-key": "e2b_" + "0" * 40},
        )
        gone = client.get(
            f"http://sandbox.{gateway.domain}:{team_envoy}/health",
            headers={"e2b-sandbox-id": "inope0000000000000000", "e2b-sandbox-port": "49983"},
        )
        team = client.get(f"http://127.0.0.1:{team_envoy}/healthz")
    assert bad_key.status_code == 401
    assert bad_key.json() == {"code": 401, "message": "invalid API key"}
    assert gone.status_code == 502, (gone.status_code, gone.text)
    assert gone.json() == {
        "sandboxId": "inope0000000000000000",
        "message": "The sandbox was not found",
        "code": 502,
    }
    # the team's own catch-all still answers for hosts that are not the gateway's
    assert (team.status_code, team.text) == (200, "ok")
