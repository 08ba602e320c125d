"""The switches: `up --fast-path/--no-fast-path` (and its variable), what `up` then gives
Envoy and the edges, and the edge's `--fast-path-routes` checks."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from extproc.core.flags import EnvDefaults
from extproc.edge import command as edge_command
from extproc.up import _commands, plan_edges, register, routes_file, settings_from

ENV = EnvDefaults("FAST_PATH_TEST_")


def _switch(*argv: str, default: bool = True) -> bool:
    parser = argparse.ArgumentParser()
    ENV.switch(parser, "--fast-path", default, "help")
    value: bool = parser.parse_args(list(argv)).fast_path
    return value


def test_a_switch_takes_its_default_from_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _switch() is True
    assert _switch(default=False) is False
    assert _switch("--no-fast-path") is False
    monkeypatch.setenv("FAST_PATH_TEST_FAST_PATH", "off")
    assert _switch() is False
    assert _switch("--fast-path") is True  # the flag wins
    monkeypatch.setenv("FAST_PATH_TEST_FAST_PATH", "maybe")
    with pytest.raises(ValueError, match="FAST_PATH_TEST_FAST_PATH: expected one of"):
        _switch()


def _up(tmp_path: Path, *argv: str) -> dict[str, list[str]]:
    parser = argparse.ArgumentParser()
    register(parser)
    settings = settings_from(parser.parse_args(["--state-dir", str(tmp_path), *argv]))
    return _commands(settings, plan_edges(settings), tmp_path / "envoy.yaml")


def test_up_hands_the_edges_the_static_routes_only_with_the_fast_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AGENTCUBE_E2B_UP_FAST_PATH", raising=False)
    fast = _up(tmp_path)["edge"]
    routes = fast[fast.index("--fast-path-routes") + 1]
    parser = argparse.ArgumentParser()
    register(parser)
    assert routes == str(
        routes_file(settings_from(parser.parse_args(["--state-dir", str(tmp_path)])))
    )
    assert "--fast-path-routes" not in _up(tmp_path, "--no-fast-path")["edge"]
    monkeypatch.setenv("AGENTCUBE_E2B_UP_FAST_PATH", "off")
    assert "--fast-path-routes" not in _up(tmp_path)["edge"]


def _edge(*argv: str) -> object:
    parser = argparse.ArgumentParser()
    edge_command.register(parser)
    return edge_command.settings_from_args(parser.parse_args(list(argv)))


def test_the_edge_refuses_a_fast_path_it_cannot_run(tmp_path: Path) -> None:
    routes = tmp_path / "routes.pb"
    with pytest.raises(ValueError, match="--fast-path-routes: no such file"):
        _edge("--fast-path-routes", str(routes))
    routes.write_bytes(b"")
    with pytest.raises(ValueError, match="needs the lifecycle directory"):
        _edge("--fast-path-routes", str(routes), "--directory-source", "kubernetes")
    settings = _edge("--fast-path-routes", str(routes))
    assert settings.fast_path.routes_file == routes  # type: ignore[attr-defined]
    assert _edge().fast_path.routes_file is None  # type: ignore[attr-defined]
