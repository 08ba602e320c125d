"""`agentcube-e2b edge` flags: unix socket addresses and the lifecycle caller token file."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from extproc.core.caller_token import write_token_file
from extproc.edge.command import register, settings_from_args
from extproc.edge.settings import EdgeSettings


def _settings(*argv: str) -> EdgeSettings:
    parser = argparse.ArgumentParser()
    register(parser)
    return settings_from_args(parser.parse_args(list(argv)))


def test_unix_sockets_and_a_token_file_as_up_passes_them(tmp_path: Path) -> None:
    token = tmp_path / "lifecycle-token"
    write_token_file(token, "ab" * 32)
    settings = _settings(
        *("--listen", f"unix:{tmp_path}/edge.sock"),
        *("--metrics-listen", f"unix:{tmp_path}/metrics.sock"),
        *("--lifecycle", f"unix:{tmp_path}/lifecycle.sock"),
        *("--lifecycle-token-file", str(token)),
    )
    assert settings.listen == f"unix:{tmp_path}/edge.sock"
    assert settings.metrics_listen == f"unix:{tmp_path}/metrics.sock"
    assert settings.directory.lifecycle_target == f"unix:{tmp_path}/lifecycle.sock"
    assert settings.directory.lifecycle_token_file == token
    assert _settings().directory.lifecycle_token_file is None  # Kubernetes mode: none


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--listen", "unix:edge.sock"), "--listen: expected unix:/ABSOLUTE/PATH"),
        (("--lifecycle", "nowhere"), "--lifecycle: expected unix:/PATH or HOST:PORT"),
        (("--metrics-listen", "unix:/" + "m" * 120), "--metrics-listen: socket path"),
    ],
)
def test_bad_addresses_name_the_flag(argv: tuple[str, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _settings(*argv)


def test_a_token_file_others_can_read_or_an_empty_one_is_refused(tmp_path: Path) -> None:
    token = tmp_path / "lifecycle-token"
    with pytest.raises(ValueError, match="--lifecycle-token-file: cannot read"):
        _settings("--lifecycle-token-file", str(token))
    token.write_text("ab" * 32)
    token.chmod(0o644)
    with pytest.raises(ValueError, match="readable by other users"):
        _settings("--lifecycle-token-file", str(token))
    token.write_text("\n")
    token.chmod(0o600)
    with pytest.raises(ValueError, match="is empty"):
        _settings("--lifecycle-token-file", str(token))
