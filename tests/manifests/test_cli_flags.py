"""The commands in the Deployments are ones `agentcube-e2b` accepts, with valid settings, and
they agree with the Services, ports and probes around them.

Every flag and AGENTCUBE_E2B_* value in k8s/base must parse with today's CLI and build the
settings the manifest means, so manifests and code cannot drift apart silently.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

import pytest

from extproc.k8s.lifecycle_tls import server_names
from manifests.render import render

MODULES = {"edge": "extproc.edge.command", "lifecycle": "extproc.lifecycle.command"}
NAMESPACE = "agentcube-system"


def _container(name: str) -> dict[str, Any]:
    for obj in render():
        if obj["kind"] != "Deployment":
            continue
        for spec in obj["spec"]["template"]["spec"]["containers"]:
            if spec["name"] == name:
                assert spec["command"][:2] == ["agentcube-e2b", name]
                return spec
    raise AssertionError(f"no container {name}")


def _settings(subcommand: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    container = _container(subcommand)
    # flag defaults come from environment variables, read when the parser is built
    for name in ("AGENTCUBE_NAMESPACE", "POD_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)
    for variable in container.get("env", []):
        if "value" in variable:
            monkeypatch.setenv(variable["name"], variable["value"])
        elif variable["valueFrom"].get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
            monkeypatch.setenv(variable["name"], NAMESPACE)
    module = importlib.import_module(MODULES[subcommand])
    parser = argparse.ArgumentParser(prog=f"agentcube-e2b {subcommand}")
    module.register(parser)
    return module.settings_from_args(parser.parse_args(container["command"][2:]))


def _service_port(name: str) -> dict[str, Any]:
    (service,) = [o for o in render() if o["kind"] == "Service" and o["metadata"]["name"] == name]
    (port,) = service["spec"]["ports"]
    return dict(port)


def _port(host_port: str) -> int:
    return int(host_port.rpartition(":")[2])


def test_edge_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings("edge", monkeypatch)
    assert settings.domain == "e2b.example.com"
    assert settings.listen == "127.0.0.1:9001"
    kube = settings.kubernetes
    assert (kube.keys_source, kube.directory_source) == ("kubernetes", "kubernetes")
    assert (kube.namespace, kube.identity_namespace) == (NAMESPACE, "agentcube")
    assert kube.lifecycle_tls_secret and kube.proof_secret
    # dials the lifecycle Service by a name its certificate carries
    host, _, port = settings.directory.lifecycle_target.rpartition(":")
    assert host in server_names(NAMESPACE)
    service = _service_port("agentcube-e2b-lifecycle")
    assert int(port) == service["port"]
    assert settings.directory.lifecycle_token_file is None  # mutual TLS instead


def test_lifecycle_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings("lifecycle", monkeypatch)
    assert settings.backend == "kubernetes"
    assert settings.server.listen == "0.0.0.0:9002"
    kube = settings.kubernetes
    assert (kube.namespace, kube.identity_namespace) == (NAMESPACE, "agentcube")
    assert kube.create_identity is False  # AgentCube's router makes the identity
    assert kube.agent_sandbox_version == "auto"
    edge = _settings("edge", monkeypatch).kubernetes
    assert (kube.lifecycle_tls_secret, kube.proof_secret) == (
        edge.lifecycle_tls_secret, edge.proof_secret
    )  # fmt: skip
    container = _container("lifecycle")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    service = _service_port("agentcube-e2b-lifecycle")
    assert ports[service["targetPort"]] == _port(settings.server.listen)
    # kubelet probes the plaintext health port, which is not the TLS one
    assert settings.server.health_listen
    assert ports["health"] == _port(settings.server.health_listen) != ports["grpc"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == ports["health"]


@pytest.mark.parametrize("subcommand", sorted(MODULES))
def test_no_caller_token_in_kubernetes_mode(subcommand: str) -> None:
    command = _container(subcommand)["command"]
    assert not any("token-file" in word for word in command)
