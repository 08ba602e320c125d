"""One traced run of the whole gateway, shared by the package's end-to-end tests.

`up` runs with JSON logs; the SDK creates a sandbox with an env var, a traffic token and an
envd token, runs a command, reads a file (the sandbox's own log), sends a request with the
traffic token and one with a wrong API key, and kills the sandbox. Envoy's stats are read
before `up` stops; the logs after, so that every line of the run is there.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2b import Sandbox

from support.gateway import envoy_admin, envoy_argv, running_gateway

# What a tenant's code would see and a log must not.
ENV_NAME = "OBSERVED_SECRET"
WRONG_KEY = "e2b_" + "f" * 40


@dataclass
class Trace:
    sandbox_id: str
    # every line `up` wrote to stderr (its own, its children's, Envoy's), parsed
    lines: list[dict[str, Any]]
    raw: str
    # the sandbox's /var/log/agentcube-e2b.log (picod)
    sandbox_log: str
    # Envoy's /stats/prometheus during the run
    envoy_stats: str
    # name -> value of everything no log may contain
    secrets: dict[str, str] = field(default_factory=dict)

    def access_log(self) -> list[dict[str, Any]]:
        """Envoy's access log entries (the only lines without a `process`)."""
        return [line for line in self.lines if "process" not in line and "path" in line]

    def of(self, process: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("process") == process]


def _scenario(url: str, domain: str, state: Path) -> tuple[str, str, str, dict[str, str]]:
    env_value = "env-value-" + secrets.token_urlsafe(12)
    sbx = Sandbox.create(
        timeout=120,
        envs={ENV_NAME: env_value},
        secure=True,
        network={"allow_public_traffic": False},
    )
    try:
        assert sbx.commands.run(f"printenv {ENV_NAME}").stdout == env_value + "\n"
        sandbox_log = sbx.files.read("/var/log/agentcube-e2b.log", user="root")
        traffic_token = sbx.traffic_access_token or ""
        assert traffic_token
        with httpx.Client(base_url=url, timeout=10) as client:
            # nothing listens on 8000: 502 from Envoy, after the edge checked the token
            headers = {"host": f"8000-{sbx.sandbox_id}.{domain}"}
            headers["e2b-traffic-access-token"] = traffic_token
            assert client.get("/", headers=headers).status_code == 502
            assert client.get("/sandboxes", headers={"x-api-key": WRONG_KEY}).status_code == 401
        with envoy_admin(state) as admin:
            stats = admin.get("/stats/prometheus").text
        found = {
            "envd access token": sbx._envd_access_token or "",
            "traffic access token": traffic_token,
            "env var value": env_value,
            "lifecycle caller token": (state / "run" / "lifecycle-token").read_text().strip(),
            "wrong API key": WRONG_KEY,
        }
    finally:
        sbx.kill()
    return sbx.sandbox_id, sandbox_log, stats, found


@pytest.fixture(scope="package")
def trace(tmp_path_factory: pytest.TempPathFactory) -> Trace:
    state = tmp_path_factory.mktemp("observability")
    log = state.parent / "observability-gateway.log"
    env = {**os.environ, "AGENTCUBE_E2B_UP_LOG_FORMAT": "json"}
    with running_gateway(state, log, env) as gateway:
        sandbox_id, sandbox_log, stats, found = _scenario(gateway.url, gateway.domain, state)
        found["API key"] = gateway.api_key
    raw = log.read_text()
    lines = [json.loads(line) for line in raw.splitlines()]
    return Trace(sandbox_id, lines, raw, sandbox_log, stats, found)


_RDS_BOOTSTRAP = """
node: {id: stats, cluster: stats}
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: 0}}
static_resources:
  listeners:
  - name: e2b
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": HCM
          stat_prefix: e2b
          rds:
            route_config_name: e2b
            config_source:
              resource_api_version: V3
              path_config_source: {path: ROUTES}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"""
_HCM = (
    "type.googleapis.com/envoy.extensions.filters.network."
    "http_connection_manager.v3.HttpConnectionManager"
)
_ROUTES = """
resources:
- "@type": type.googleapis.com/envoy.config.route.v3.RouteConfiguration
  name: e2b
  virtual_hosts:
  - {name: all, domains: ["*"], routes: [{match: {prefix: /}, direct_response: {status: 404}}]}
"""


@pytest.fixture(scope="package")
def rds_envoy_stats(tmp_path_factory: pytest.TempPathFactory) -> str:
    """/stats/prometheus of an Envoy whose `e2b` connection manager takes its routes by RDS
    (from a file): the stats a deployment fed by a control plane has and `up`'s has not."""
    directory = tmp_path_factory.mktemp("rds-envoy")
    routes, config, address = (
        directory / "routes.yaml",
        directory / "envoy.yaml",
        directory / "admin",
    )
    routes.write_text(_ROUTES)
    config.write_text(_RDS_BOOTSTRAP.replace("ROUTES", str(routes)).replace("HCM", _HCM))
    argv = [*envoy_argv(config, concurrency=1, log_level="error"), "--admin-address-path"]
    process = subprocess.Popen([*argv, str(address)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if address.exists() and address.read_text().strip():
                stats = httpx.get(f"http://{address.read_text().strip()}/stats/prometheus").text
                if "envoy_http_rds_update_success" in stats:
                    return stats
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            time.sleep(0.05)
        raise TimeoutError("the RDS Envoy did not load its routes in 30 s")
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()
