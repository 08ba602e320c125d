"""core/logs.py and core/request_context.py in process: the line shapes, the flags every
process command takes, redaction, and what `up` hands its children."""

from __future__ import annotations

import argparse
import importlib
import io
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from extproc.cli import COMMANDS
from extproc.core.flags import EnvDefaults
from extproc.core.logs import (
    ENVOY_JSON_LOG_FORMAT,
    REDACTED,
    JsonFormatter,
    TextFormatter,
    add_log_flags,
    child_line,
    log_options,
    redact,
    set_process_field,
)
from extproc.core.request_context import (
    AsgiRequestContext,
    RequestContext,
    begin_request,
    clean_request_id,
    current_request,
    end_request,
    note_request,
)
from extproc.supervising import MAX_LINE_BYTES, start_child

REQUEST_ID = "0c23fa93-0383-4e52-82ad-422e55cf1da0"
API_KEY = "e2b_" + "0123456789abcdef" * 2 + "01234567"
HEX_TOKEN = "ab" * 32
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzZXNzaW9uX2lkIjoieCJ9.c2lnbmF0dXJl"


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO, logging.Handler]]:
    """A logger of its own writing through a JSON handler into a buffer (the root logger is
    pytest's: `setup_logging` would take it over)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("edge", {"node": "n1"}))
    log = logging.getLogger("tests.observability.captured")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    try:
        yield log, stream, handler
    finally:
        log.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_json_line_carries_the_process_the_request_and_the_extras(captured: Any) -> None:
    log, stream, _ = captured
    token = begin_request(REQUEST_ID, "team-a", "sbx1")
    try:
        note_request(sandbox_id="sbx2")
        log.info("platform %s answered %d", "create_v2", 201, extra={"status": 201, "ok": True})
    finally:
        end_request(token)
    log.warning("outside a request: ü")
    inside, outside = lines(stream)
    assert inside == {
        "time": inside["time"],
        "level": "info",
        "process": "edge",
        "pid": inside["pid"],
        "logger": "tests.observability.captured",
        "message": "platform create_v2 answered 201",
        "node": "n1",
        "request_id": REQUEST_ID,
        "tenant": "team-a",
        "sandbox_id": "sbx2",
        "status": 201,
        "ok": True,
    }
    assert inside["time"].endswith("Z") and len(inside["time"]) == len("2026-01-01T00:00:00.000Z")
    assert set(outside) == {"time", "level", "process", "pid", "logger", "message", "node"}
    assert outside["message"] == "outside a request: ü" and outside["level"] == "warning"
    assert stream.getvalue().isascii()  # one line per record whatever the text holds


def test_an_exception_is_one_field_and_secrets_in_it_are_masked(captured: Any) -> None:
    log, stream, _ = captured
    try:
        raise ValueError(f"bad key {API_KEY}\nsecond line")
    except ValueError:
        log.exception("failed with %s", f"Bearer {HEX_TOKEN}", extra={"detail": {"jwt": JWT}})
    (line,) = lines(stream)
    assert line["message"] == f"failed with Bearer {REDACTED}"
    assert "ValueError: bad key [redacted]\nsecond line" in line["exception"]
    assert line["detail"] == "{'jwt': '[redacted]'}"
    assert API_KEY not in stream.getvalue() and JWT not in stream.getvalue()


def test_a_text_line_has_the_same_fields_after_the_message() -> None:
    record = logging.LogRecord("extproc.x", logging.INFO, "f", 1, "hello %s", ("you",), None)
    record.status = 204
    token = begin_request(REQUEST_ID, "team-a")
    try:
        text = TextFormatter("lifecycle").format(record)
    finally:
        end_request(token)
    assert text.endswith(
        f" INFO lifecycle extproc.x: hello you request_id={REQUEST_ID} tenant=team-a status=204"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"key {API_KEY}.", f"key {REDACTED}."),
        (f"Authorization: Bearer {JWT}", f"Authorization: Bearer {REDACTED}"),
        ("authorization: bearer abc.def.ghi", f"authorization: bearer {REDACTED}"),
        (f'{{"x-access-token": "{HEX_TOKEN}"}}', f'{{"x-access-token": "{REDACTED}"}}'),
        (f"jwt={JWT}&x=1", f"jwt={REDACTED}&x=1"),
        ("9f" * 40, REDACTED),  # any long hex run: a token with something stuck to it
        # not secrets: ids, UUIDs, short hex, uppercase hex, words
        (REQUEST_ID, REQUEST_ID),
        ("sandbox 2m6571m5c3k8zg37adlp", "sandbox 2m6571m5c3k8zg37adlp"),
        ("ab" * 31, "ab" * 31),
        ("AB" * 32, "AB" * 32),
        ("the bearer of bad news", "the bearer of bad news"),
        ("e2b_short", "e2b_short"),
    ],
)
def test_redaction(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_set_process_field_reaches_the_installed_formatter(captured: Any) -> None:
    log, stream, handler = captured
    root = logging.getLogger()
    root.addHandler(handler)  # set_process_field looks at the root logger's handlers
    try:
        set_process_field("sandbox_id", "bound1")
    finally:
        root.removeHandler(handler)
    log.info("after /init")
    assert lines(stream)[0]["sandbox_id"] == "bound1"


# --- flags --------------------------------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _parsed(monkeypatch: pytest.MonkeyPatch, argv: list[str], **env: str) -> argparse.Namespace:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    parser = argparse.ArgumentParser()
    add_log_flags(parser, EnvDefaults("AGENTCUBE_E2B_TEST_"))
    return parser.parse_args(argv)


def test_the_format_defaults_to_text_on_a_terminal_and_json_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert log_options(_parsed(monkeypatch, [])) == ("text", "INFO")
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert log_options(_parsed(monkeypatch, [])) == ("json", "INFO")
    env = {"AGENTCUBE_E2B_TEST_LOG_FORMAT": "TEXT", "AGENTCUBE_E2B_TEST_LOG_LEVEL": "debug"}
    assert log_options(_parsed(monkeypatch, [], **env)) == ("text", "DEBUG")
    argv = ["--log-format", "json", "--log-level", "warning"]
    assert log_options(_parsed(monkeypatch, argv, **env)) == ("json", "WARNING")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--log-format", "xml"], "--log-format: expected text or json, got 'xml'"),
        (["--log-level", "loud"], "--log-level: expected one of DEBUG, INFO, WARNING, ERROR"),
    ],
)
def test_bad_values_name_the_flag(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        log_options(_parsed(monkeypatch, argv))


PROCESS_COMMANDS = ("up", "edge", "lifecycle", "picod", "interpreter")


@pytest.mark.parametrize("command", PROCESS_COMMANDS)
def test_every_process_command_takes_the_flags_and_their_variables(
    monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    surface = command.upper()
    monkeypatch.setenv(f"AGENTCUBE_E2B_{surface}_LOG_FORMAT", "json")
    monkeypatch.setenv(f"AGENTCUBE_E2B_{surface}_LOG_LEVEL", "ERROR")
    module = importlib.import_module(COMMANDS[command][0])
    parser = argparse.ArgumentParser()
    module.register(parser)
    args = parser.parse_args([])
    assert log_options(args) == ("json", "ERROR")
    args = parser.parse_args(["--log-format", "text", "--log-level", "DEBUG"])
    assert log_options(args) == ("text", "DEBUG")


def test_up_gives_its_choice_to_every_child_envoy_included(tmp_path: Path) -> None:
    from extproc import up

    parser = argparse.ArgumentParser()
    up.register(parser)
    argv = ["--state-dir", str(tmp_path), "--log-format", "json", "--log-level", "DEBUG"]
    settings = up.settings_from(parser.parse_args([*argv, "--edge-processes", "2"]))
    commands = up._commands(settings, up.plan_edges(settings), tmp_path / "envoy.yaml")
    assert sorted(commands) == ["edge-1", "edge-2", "envoy", "lifecycle"]
    for name in ("edge-1", "edge-2", "lifecycle"):
        assert commands[name][-4:] == ["--log-format", "json", "--log-level", "DEBUG"]
    envoy = commands["envoy"]
    assert envoy[envoy.index("--log-format") + 1] == ENVOY_JSON_LOG_FORMAT
    argv = ["--state-dir", str(tmp_path), "--log-format", "text"]
    text = up.settings_from(parser.parse_args(argv))
    commands = up._commands(text, up.plan_edges(text), tmp_path / "envoy.yaml")
    assert "--log-format" not in commands["envoy"]
    assert commands["lifecycle"][-4:] == ["--log-format", "text", "--log-level", "INFO"]


def test_the_kubernetes_envoy_logs_the_same_json() -> None:
    manifest = Path(__file__).resolve().parents[2] / "k8s" / "base" / "edge.yaml"
    documents = [d for d in yaml.safe_load_all(manifest.read_text()) if d]
    (deployment,) = [d for d in documents if d["kind"] == "Deployment"]
    containers = deployment["spec"]["template"]["spec"]["containers"]
    (envoy,) = [c for c in containers if c["name"] == "envoy"]
    command = envoy["command"]
    assert command[command.index("--log-format") + 1] == ENVOY_JSON_LOG_FORMAT


# --- up's copy of its children's output ----------------------------------------------------


def test_child_lines_are_prefixed_in_text_and_kept_or_wrapped_in_json() -> None:
    assert child_line("edge", b"hello\n", "text") == b"[edge] hello\n"
    assert child_line("edge", b"no newline", "text") == b"[edge] no newline\n"
    own = b'{"level":"info","process":"edge","message":"m"}\n'
    assert child_line("edge", own, "json") == own
    wrapped = json.loads(child_line("lifecycle", f"Traceback: {API_KEY}\r\n".encode(), "json"))
    assert wrapped["process"] == "lifecycle" and wrapped["level"] == "info"
    assert wrapped["message"] == f"Traceback: {REDACTED}"
    assert wrapped["time"].endswith("Z")


# --- the request context ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        (REQUEST_ID, REQUEST_ID),
        ("custom-id_1.2:3", "custom-id_1.2:3"),
        (None, ""),
        ("", ""),
        ("has space", ""),
        ("line\nbreak", ""),
        ("é-not-ascii", ""),
        ("x" * 129, ""),
        ("x" * 128, "x" * 128),
    ],
)
def test_request_ids_are_kept_only_when_printable_and_short(given: str | None, kept: str) -> None:
    assert clean_request_id(given) == kept


async def test_the_asgi_middleware_scopes_the_context_to_one_request() -> None:
    seen: list[RequestContext | None] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(current_request())

    wrapped = AsgiRequestContext(app)
    headers = [(b"host", b"x"), (b"x-request-id", REQUEST_ID.encode())]
    await wrapped({"type": "http", "headers": headers}, None, None)
    await wrapped({"type": "http", "headers": [(b"host", b"x")]}, None, None)
    await wrapped({"type": "lifespan"}, None, None)
    assert seen == [RequestContext(REQUEST_ID), None, None]
    assert current_request() is None


async def test_a_child_line_too_long_is_dropped_and_the_child_keeps_going(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A JSON line holds a whole traceback; one past the pump's limit must not stop the pump,
    or the child would block on a full pipe."""
    script = "import sys; sys.stdout.write('x' * (3 << 20) + '\\n'); print('after', flush=True)"
    child = await start_child("big", [sys.executable, "-c", script], "json")
    assert await child.exited == 0
    await child.pump
    messages = [json.loads(line)["message"] for line in capfd.readouterr().err.splitlines()]
    assert messages == [f"(a line of over {MAX_LINE_BYTES} bytes was dropped)", "after"]
