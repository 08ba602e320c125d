"""The commands in the Deployments are ones `agentcube-e2b` accepts, minus the pending flags.

The Kubernetes mode (informers in the edge, the lifecycle `kubernetes` backend) is not built
yet; the manifests already carry the flags it implies. PENDING lists them. Every other flag
must parse with today's CLI and build valid settings, and every pending flag must still be
refused: when the CLI learns one, this test fails until it leaves PENDING (and the manifest
is checked against the real flag), so manifests and code cannot drift apart silently.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

import pytest

from k8s.render import render

PENDING: dict[str, dict[str, str]] = {
    "edge": {
        "--keys-source": "kubernetes",
        "--keys-namespace": "agentcube-system",
        "--directory-source": "kubernetes",
    },
    "lifecycle": {
        "--backend": "kubernetes",
        "--identity-secret": "picod-router-identity",
    },
}
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


def _parser(subcommand: str) -> tuple[argparse.ArgumentParser, Any]:
    module = importlib.import_module(MODULES[subcommand])
    parser = argparse.ArgumentParser(prog=f"agentcube-e2b {subcommand}")
    module.register(parser)
    return parser, module


def _without_pending(args: list[str], pending: dict[str, str]) -> list[str]:
    kept: list[str] = []
    position = 0
    while position < len(args):
        flag = args[position]
        if flag in pending:
            assert args[position + 1] == pending[flag], f"{flag} value differs from PENDING"
            position += 2
            continue
        kept.append(flag)
        position += 1
    return kept


@pytest.mark.parametrize("subcommand", sorted(PENDING))
def test_manifest_flags_parse_today(subcommand: str, monkeypatch: pytest.MonkeyPatch) -> None:
    container = _container(subcommand)
    args: list[str] = container["command"][2:]
    # flag defaults come from AGENTCUBE_E2B_* variables, read when the parser is built
    for variable in container.get("env", []):
        if "value" in variable:
            monkeypatch.setenv(variable["name"], variable["value"])
    for flag in PENDING[subcommand]:
        assert flag in args, f"{flag} is in PENDING but not in the manifest"
    parser, module = _parser(subcommand)
    namespace = parser.parse_args(_without_pending(args, PENDING[subcommand]))
    settings = module.settings_from_args(namespace)
    if subcommand == "edge":
        assert settings.domain == "e2b.example.com"
        assert settings.listen == "127.0.0.1:9001"
    else:
        assert settings.server.listen == "0.0.0.0:9002"


@pytest.mark.parametrize(
    ("subcommand", "flag"),
    [(sub, flag) for sub, flags in sorted(PENDING.items()) for flag in flags],
)
def test_pending_flags_are_still_pending(
    subcommand: str, flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    parser, _ = _parser(subcommand)
    with pytest.raises(SystemExit):
        parser.parse_args([flag, PENDING[subcommand][flag]])
    capsys.readouterr()
