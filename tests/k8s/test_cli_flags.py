"""The commands in the Deployments are ones `agentcube-e2b` accepts, with valid settings.

Every flag and AGENTCUBE_E2B_* value in k8s/base must parse with today's CLI and build the
settings the manifest means, so manifests and code cannot drift apart silently.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

import pytest

from k8s.render import render

MODULES = {"edge": "extproc.edge.command", "lifecycle": "extproc.lifecycle.command"}


def _container(name: str) -> dict[str, Any]:
    for obj in render():
        if obj["kind"] != "Deployment":
            continue
        for spec in obj["spec"]["template"]["spec"]["containers"]:
            if spec["name"] == name:
                assert spec["command"][:2] == ["agentcube-e2b", name]
                return spec
    raise AssertionError(f"no container {name}")


@pytest.mark.parametrize("subcommand", sorted(MODULES))
def test_manifest_flags_parse(subcommand: str, monkeypatch: pytest.MonkeyPatch) -> None:
    container = _container(subcommand)
    # flag defaults come from AGENTCUBE_E2B_* variables, read when the parser is built
    for variable in container.get("env", []):
        if "value" in variable:
            monkeypatch.setenv(variable["name"], variable["value"])
    module = importlib.import_module(MODULES[subcommand])
    parser = argparse.ArgumentParser(prog=f"agentcube-e2b {subcommand}")
    module.register(parser)
    settings = module.settings_from_args(parser.parse_args(container["command"][2:]))
    if subcommand == "edge":
        assert settings.domain == "e2b.example.com"
        assert settings.listen == "127.0.0.1:9001"
        assert settings.kubernetes.keys_source == "kubernetes"
        assert settings.kubernetes.directory_source == "kubernetes"
    else:
        assert settings.server.listen == "0.0.0.0:9002"
        assert settings.backend == "kubernetes"
