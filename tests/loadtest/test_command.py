"""Bad input to `agentcube-e2b loadtest` gets one clear line and a non-zero status, never a
traceback, and never a load test of E2B's cloud. No gateway is needed for any of these."""

from __future__ import annotations

from pathlib import Path

import pytest

from extproc.cli import main

KEY = "e2b_" + "0" * 40
GATEWAY_ENV = {
    "E2B_API_KEY": KEY,
    "E2B_DOMAIN": "e2b.localhost",
    "E2B_API_URL": "http://127.0.0.1:9",
    "E2B_SANDBOX_URL": "http://127.0.0.1:9",
}


def loadtest(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    *argv: str,
) -> tuple[int, str]:
    for name in (*GATEWAY_ENV, "E2B_DEBUG", "AGENTCUBE_E2B_LOADTEST_ADMIN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code = main(["loadtest", "--duration", "1", *argv])
    captured = capsys.readouterr()
    assert captured.out == ""
    return code, captured.err


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({**GATEWAY_ENV, "E2B_API_KEY": ""}, "E2B_API_KEY is not set"),
        ({**GATEWAY_ENV, "E2B_DEBUG": "true"}, "E2B_DEBUG is set"),
        ({"E2B_API_KEY": KEY}, "would load-test E2B's cloud (e2b.app)"),
    ],
)
def test_an_environment_that_does_not_name_a_gateway_is_refused(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    env: dict[str, str],
    message: str,
) -> None:
    code, err = loadtest(monkeypatch, capsys, env, "--state-dir", str(tmp_path))
    assert code == 1
    assert err.count("\n") == 1
    assert err.startswith("agentcube-e2b loadtest: ")
    assert message in err


def test_no_envoy_admin_where_up_would_put_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, err = loadtest(monkeypatch, capsys, GATEWAY_ENV, "--state-dir", str(tmp_path))
    assert code == 1
    assert err.count("\n") == 1
    socket = tmp_path.absolute() / "run" / "envoy-admin.sock"
    assert f"Envoy admin at unix:{socket} is not reachable" in err
    assert "port-forward" in err  # how to reach Kubernetes' Envoy


def test_an_admin_address_with_nothing_behind_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = loadtest(monkeypatch, capsys, GATEWAY_ENV, "--admin", "127.0.0.1:9")
    assert code == 1
    assert err.count("\n") == 1
    assert "Envoy admin at 127.0.0.1:9 is not reachable" in err
    assert "port-forward" not in err  # the operator chose the address


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--duration", "0"], "--duration: expected >= 1"),
        (["--rate", "fast"], "--rate: expected a number"),
        (["--clients", "0"], "--clients: expected >= 1"),
        (["--admin", "envoy"], "--admin: expected unix:/PATH or HOST:PORT"),
        (["--admin", "unix:relative.sock"], "--admin: expected unix:/ABSOLUTE/PATH"),
    ],
)
def test_bad_flags(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    code, err = loadtest(monkeypatch, capsys, GATEWAY_ENV, *argv)
    assert code == 2
    assert err.count("\n") == 1
    assert message in err
