"""extproc.core.flags: flag defaults from environment variables, and flag value checks."""

from __future__ import annotations

import argparse

import pytest

from extproc.cli import main
from extproc.core.flags import USAGE_EXIT, EnvDefaults, integer_arg, number_arg

ENV = EnvDefaults("FLAGS_TEST_")


def test_text_keeps_a_set_value_even_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ENV.var("A") == "FLAGS_TEST_A"
    assert ENV.text("A") is None
    assert ENV.text("A", 5.0) == 5.0
    monkeypatch.setenv("FLAGS_TEST_A", "")
    assert ENV.text("A", "x") == ""
    monkeypatch.setenv("FLAGS_TEST_A", "v")
    assert ENV.text("A", "x") == "v"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1", True), ("YES", True), ("On", True), ("0", False), ("maybe", False), ("", False)],
)
def test_flag(monkeypatch: pytest.MonkeyPatch, raw: str, expected: bool) -> None:
    monkeypatch.setenv("FLAGS_TEST_B", raw)
    assert ENV.flag("B") is expected


def test_flag_unset_is_false() -> None:
    assert ENV.flag("UNSET") is False


def test_numbers_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ENV.integer("N", 2) == 2
    assert ENV.number("N", 60) == 60.0
    monkeypatch.setenv("FLAGS_TEST_N", "7")
    assert ENV.integer("N", 2) == 7
    assert ENV.number("N", 60) == 7.0
    monkeypatch.setenv("FLAGS_TEST_N", "x")
    with pytest.raises(ValueError, match=r"^FLAGS_TEST_N: expected an integer, got 'x'$"):
        ENV.integer("N", 2)
    with pytest.raises(ValueError, match=r"^FLAGS_TEST_N: expected a number, got 'x'$"):
        ENV.number("N", 60)


def test_add_names_the_variable_after_the_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLAGS_TEST_EDGE_LISTEN", "127.0.0.1:1")
    parser = argparse.ArgumentParser()
    ENV.add(parser, "--edge-listen", "127.0.0.1:9001", "edge gRPC", metavar="IP:PORT")
    ENV.add(parser, "--admin", "127.0.0.1:9901", "admin")
    assert parser.parse_args([]).edge_listen == "127.0.0.1:1"
    assert parser.parse_args([]).admin == "127.0.0.1:9901"
    assert parser.parse_args(["--admin", "a:1"]).admin == "a:1"
    help_text = " ".join(parser.format_help().split())
    assert "--edge-listen IP:PORT edge gRPC (env FLAGS_TEST_EDGE_LISTEN; default 127.0.0.1:1)" in (
        help_text
    )
    assert "admin (env FLAGS_TEST_ADMIN; default 127.0.0.1:9901)" in help_text


def test_flag_values_at_least() -> None:
    args = argparse.Namespace(grace="2.5", pool_size="3", bad="x", low="0")
    assert number_arg(args, "grace", 0) == 2.5
    assert integer_arg(args, "pool_size", 0) == 3
    with pytest.raises(ValueError, match=r"^--grace: expected a number, got '2.5'$"):
        integer_arg(args, "grace", 0)
    with pytest.raises(ValueError, match=r"^--bad: expected a number, got 'x'$"):
        number_arg(args, "bad", 0)
    with pytest.raises(ValueError, match=r"^--low: expected >= 0.1, got 0.0$"):
        number_arg(args, "low", 0.1)
    with pytest.raises(ValueError, match=r"^--pool-size: expected >= 5, got 3$"):
        integer_arg(args, "pool_size", 5)


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["up", "--log-format", "nope"], "agentcube-e2b up: --log-format: expected text or json"),
        (["picod", "--log-format", "nope"], "agentcube-e2b picod: error: --log-format:"),
        (["interpreter", "--log-format", "x"], "agentcube-e2b interpreter: error: --log-format:"),
        (["envoy-config", "--edge", "nope"], "agentcube-e2b envoy-config: expected HOST:PORT"),
    ],
)
def test_a_bad_value_after_parsing_is_one_line_and_exit_2(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # argparse's own errors exit 2 too; these are the values only a command's run can check.
    assert main(argv) == USAGE_EXIT == 2
    err = capsys.readouterr().err
    assert err.startswith(said) and err.count("\n") == 1
