"""The edge dies: Envoy fails closed with E2B JSON 503, and recovers as soon as it is back.

This test runs its own edge and Envoy (same state directory and lifecycle service as the
session's gateway) so it can kill and restart the edge without disturbing `up`, which stops
everything when a child dies.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from extproc.envoy_config.bootstrap import render_yaml
from extproc.envoy_config.settings import EnvoySettings, HostPort, UnixSocket
from support.gateway import CLI, Gateway, envoy_argv
from support.processes import free_port, wait_until


def _start_edge(gateway: Gateway, port: int, log: Path) -> subprocess.Popen[bytes]:
    argv = [
        *CLI,
        "edge",
        "--listen",
        f"127.0.0.1:{port}",
        "--lifecycle",
        gateway.lifecycle,
        "--lifecycle-token-file",
        str(gateway.lifecycle_token_file),
        "--state-dir",
        str(gateway.state_dir),
        "--domain",
        gateway.domain,
        "--metrics-listen",
        f"127.0.0.1:{free_port()}",
    ]
    with log.open("ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=out)


@pytest.mark.timeout(90)
def test_edge_killed_means_503_json_and_back_within_2s(gateway: Gateway, tmp_path: Path) -> None:
    edge_port = free_port()
    settings = EnvoySettings(
        listen=HostPort("127.0.0.1", free_port()),
        admin=UnixSocket(tmp_path / "envoy-admin.sock"),
        domain=gateway.domain,
        edges=(HostPort("127.0.0.1", edge_port),),
    )
    config = tmp_path / "envoy.yaml"
    config.write_text(render_yaml(settings))
    log = tmp_path / "edge.log"
    envoy = subprocess.Popen(
        envoy_argv(config, concurrency=1, log_level="error"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    edge = _start_edge(gateway, edge_port, log)
    url = f"http://{settings.listen}/v2/sandboxes"
    headers = {"x-api-key": gateway.api_key}
    try:
        with httpx.Client(timeout=5) as client:

            def status() -> int:
                try:
                    return client.get(url, headers=headers).status_code
                except httpx.TransportError:
                    return 0

            wait_until(lambda: status() == 200, 30)
            edge.send_signal(signal.SIGKILL)
            edge.wait(timeout=10)
            for request_headers in (
                headers,
                {"e2b-sandbox-id": "a" * 20, "e2b-sandbox-port": "49983"},
            ):
                down = client.get(url, headers=request_headers)
                assert down.status_code == 503
                assert down.headers["content-type"].startswith("application/json")
                assert down.json()["code"] == 503 and down.json()["message"]
            restarted_at = time.monotonic()
            edge = _start_edge(gateway, edge_port, log)
            wait_until(lambda: status() == 200, 10, interval_s=0.02)
            assert time.monotonic() - restarted_at < 2.0, log.read_text()[-2000:]
    finally:
        for process in (edge, envoy):
            process.terminate()
            process.wait(timeout=15)
