"""`agentcube-e2b loadtest` against a real `up`: one 10 s lifecycle run (the issue's
acceptance), one short data-plane run, and a wrong key and an unreachable gateway.

The checks tie the report's Envoy figures to what the clients did, without assuming that
every request passes ext_authz (sandbox traffic may be served by Envoy alone); the platform
calls (create, kill) always are checked, so the Check counters must have moved by at least
those.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from e2b import Sandbox

from extproc.cli import main
from extproc.envoy_config.clusters import EDGE_CLUSTER
from support.gateway import CLI, Gateway
from support.processes import free_port

pytestmark = pytest.mark.slow


def report_of(gateway: Gateway, tmp_path: Path, *argv: str) -> dict[str, Any]:
    """The real command, in a process of its own, as an operator runs it."""
    path = tmp_path / "report.json"
    done = subprocess.run(
        [*CLI, "loadtest", "--state-dir", str(gateway.state_dir), *argv, "--json", str(path)],
        env={**os.environ, **gateway.env},
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "loadtest: done in" in done.stderr  # the closing summary line
    assert "Envoy (" in done.stdout and "Client (" in done.stdout
    report: dict[str, Any] = json.loads(path.read_text())
    assert report["warnings"] == [], report["warnings"]
    return report


def assert_consistent(report: dict[str, Any]) -> None:
    """Figures that must agree with each other whatever the scenario."""
    envoy, client = report["envoy"], report["client"]
    down, authz = envoy["downstream"], envoy["ext_authz"]
    assert client["errors"] == 0, client["errors_by_kind"]
    assert envoy["histograms_settled"] and not envoy["restarted"]
    # every successful client operation is at least one request through this Envoy
    assert down["requests"] >= client["ok"] > 0
    assert down["time_ms"]["count"] == down["requests"]
    assert down["time_ms"]["p50"] is not None and down["time_ms"]["p99"] >= down["time_ms"]["p50"]
    assert down["by_class"]["5xx"] == 0
    assert all(cluster["5xx"] == 0 for cluster in envoy["clusters"].values())
    assert authz["checked"] + authz["not_checked"] == down["requests"]
    assert authz["denied"] == authz["error"] == 0
    assert Sandbox.list().next_items() == []  # every sandbox it made is gone


def test_a_ten_second_lifecycle_run_reports_from_envoy(gateway: Gateway, tmp_path: Path) -> None:
    report = report_of(gateway, tmp_path, "--duration", "10", "--clients", "2")
    assert report["scenario"] == "lifecycle"
    assert report["seconds"] >= 10
    assert_consistent(report)
    envoy, operations = report["envoy"], report["client"]["operations"]
    created = operations["create"]["ok"]
    assert created >= 2
    assert operations["kill"]["ok"] == created
    for name in ("commands.run", "files.write", "files.read"):
        assert operations[name]["ok"] == created
        assert operations[name]["latency_ms"]["p50"] > 0
    # create and kill are platform calls: ext_authz checks each
    assert envoy["ext_authz"]["ok"] >= 2 * created
    edge = envoy["clusters"][EDGE_CLUSTER]
    assert edge["requests"] >= 2 * created and edge["time_ms"]["count"] > 0
    # the envd calls went upstream to the sandboxes, through some other cluster
    envd_calls = sum(
        operations[name]["ok"] for name in ("commands.run", "files.write", "files.read")
    )
    upstream = sum(c["requests"] for name, c in envoy["clusters"].items() if name != EDGE_CLUSTER)
    assert upstream >= envd_calls


# The runs below are in this process (`extproc.cli.main`), which saves each one the seconds
# a fresh interpreter takes to import the SDK; the 10 s run above is the real command.


def loadtest_here(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    *argv: str,
) -> tuple[int, str, str]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)  # over the gateway's, which the fixture exported
    code = main(["loadtest", *argv])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out, captured.err


def test_a_short_fixed_rate_data_plane_run(
    gateway: Gateway,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "report.json"
    argv = ("--scenario", "data-plane", "--duration", "2", "--rate", "50", "--sandboxes", "2")
    more = ("--connections", "4", "--state-dir", str(gateway.state_dir), "--json", str(path))
    code, out, err = loadtest_here(monkeypatch, capsys, gateway.env, *argv, *more)
    assert code == 0, err
    assert "not checked" in out
    report = json.loads(path.read_text())
    assert report["warnings"] == [], report["warnings"]
    assert_consistent(report)
    client = report["client"]
    assert (client["due"], client["dropped"], client["unfinished"]) == (100, 0, 0)
    assert client["operations"]["envd stat"]["ok"] == 100
    # the window holds the envd requests only: the sandboxes were made before it
    envoy = report["envoy"]
    assert envoy["downstream"]["requests"] == 100
    assert envoy["downstream"]["by_class"]["2xx"] == 100
    upstream = sum(c["requests"] for name, c in envoy["clusters"].items() if name != EDGE_CLUSTER)
    assert upstream >= 100


def test_a_wrong_key_is_one_line(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {"E2B_API_KEY": "e2b_" + "0" * 40}
    code, out, err = loadtest_here(
        monkeypatch, capsys, env, "--duration", "1", "--state-dir", str(gateway.state_dir)
    )
    assert (code, out, err.count("\n")) == (1, "", 1)
    assert f"the gateway at {gateway.url} refused E2B_API_KEY" in err


def test_an_unreachable_gateway_is_one_line(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    env = {"E2B_API_URL": nowhere, "E2B_SANDBOX_URL": nowhere}
    code, out, err = loadtest_here(
        monkeypatch, capsys, env, "--duration", "1", "--state-dir", str(gateway.state_dir)
    )
    assert (code, out, err.count("\n")) == (1, "", 1)
    assert f"cannot use the gateway at {nowhere}" in err
