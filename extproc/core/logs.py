"""Logging for every process of the gateway: one line per record, JSON or text.

Each process command (`edge`, `lifecycle`, `picod`, `interpreter`, `up`) takes `--log-format
text|json` and `--log-level`, with defaults from its `AGENTCUBE_E2B_<SURFACE>_LOG_FORMAT` /
`_LOG_LEVEL` variables, else text when stderr is a terminal and JSON otherwise (a container,
a file, `up`'s pipe). `up` hands its own choice to its children, Envoy included.

A JSON line is one object: `time` (UTC, ms), `level`, `process`, `pid`, `logger`,
`message`, then `request_id`, `tenant` and `sandbox_id` when the line belongs to a request
(core/request_context.py; the same names as in Envoy's access log, so one `request_id`
follows a request from Envoy into the edge, the lifecycle service and the sandbox), any
`extra=` fields, and `exception` with the traceback. A text line carries the same fields as
`name=value` after the message.

No secret reaches a line: nothing logs keys, tokens, JWTs or a sandbox's env vars, and the
formatters also replace anything shaped like one (an `e2b_` API key, a JWT, a Bearer
credential, a run of 64 or more lowercase hex digits: envd access, traffic and caller tokens
and seeds are all that shape) with `[redacted]` in the message, the `extra=` fields and the
traceback, in case one quotes a secret. The price is that a sha256 digest is masked as well.
A sandbox's env var values have no shape to recognise: they are never logged.

Cost: a JSON line is about as dear as a text line (tests/bench/log_line_bench.py), and the
hot paths log nothing (the edge's allowed Check, picod's requests).

Standard library only: picod and the interpreter set it up at start-up.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time

from extproc.core.flags import EnvDefaults
from extproc.core.request_context import current_request

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TextIO

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
REDACTED = "[redacted]"
# Each pattern is tried only when its literal prefix is in the text (a search over a line
# costs more than the rest of formatting it).
_API_KEY = re.compile(r"e2b_[0-9a-f]{40}")
_JWT = re.compile(r"eyJ[\w-]*\.[\w-]+\.[\w-]*")  # a JWT's header always starts `{"`
# whatever the credential (token68 characters), when it is long enough not to be a word
_BEARER = re.compile(r"([Bb]earer|BEARER)(\s+)[A-Za-z0-9._~+/=-]{8,}")
# envd access, traffic and caller tokens, and the token seed: 64 lowercase hex digits
_HEX_TOKEN = re.compile(r"[0-9a-f]{64,}")
# LogRecord's own attributes; any other attribute came from `extra=`.
_PLAIN_RECORD_SIZE = len(logging.LogRecord("", 0, "", 0, "", None, None).__dict__)
_RECORD_ATTRIBUTES = frozenset(
    {*logging.LogRecord("", 0, "", 0, "", None, None).__dict__, "message", "asctime", "taskName"}
)
# Field values written as they are (the others as redacted strings).
_PLAIN_TYPES = (bool, int, float)
# A str as a JSON string literal, non-ASCII escaped (json's own C function).
_quote = json.encoder.encode_basestring_ascii


def utc_time(created: float) -> str:
    """ISO 8601 UTC with milliseconds: 2025-01-31T12:00:00.123Z."""
    second = int(created)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    return f"{text}.{int((created - second) * 1000):03d}Z"


def redact(text: str) -> str:
    """`text` with anything shaped like a key or token replaced by `[redacted]`."""
    if "e2b_" in text:
        text = _API_KEY.sub(REDACTED, text)
    if "eyJ" in text:
        text = _JWT.sub(REDACTED, text)
    if "earer" in text or "EARER" in text:
        text = _BEARER.sub(r"\1\2" + REDACTED, text)
    return _HEX_TOKEN.sub(REDACTED, text)


# --- flags ----------------------------------------------------------------------------------


def default_log_format(stream: Any = None) -> str:
    """text on a terminal, json otherwise."""
    stream = sys.stderr if stream is None else stream
    try:
        return "text" if stream.isatty() else "json"
    except (AttributeError, ValueError):  # closed or not a file
        return "json"


def add_log_flags(parser: argparse.ArgumentParser, env: EnvDefaults) -> None:
    """`--log-format` and `--log-level`, their defaults from `env`'s variables."""
    env.add(
        parser,
        "--log-format",
        default_log_format(),
        "log lines as text or JSON objects; the default is text on a terminal, else json",
        metavar="text|json",
    )
    env.add(parser, "--log-level", "INFO", "least severe level logged", metavar="LEVEL")


def log_options(args: argparse.Namespace) -> tuple[str, str]:
    """(format, level) of the flags `add_log_flags` made; ValueError naming the flag (either
    may come from an environment variable, which argparse does not check)."""
    log_format = str(args.log_format).lower()
    if log_format not in LOG_FORMATS:
        raise ValueError(f"--log-format: expected text or json, got {args.log_format!r}")
    level = str(args.log_level).upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"--log-level: expected one of {', '.join(LOG_LEVELS)}, got {level!r}")
    return log_format, level


def log_argv(log_format: str, level: str) -> list[str]:
    """The flags that give a child process the same logging."""
    return ["--log-format", log_format, "--log-level", level]


# --- set-up ---------------------------------------------------------------------------------


def setup_logging(
    process: str,
    log_format: str,
    level: str = "INFO",
    *,
    stream: TextIO | None = None,
    fields: dict[str, str] | None = None,
) -> logging.Handler:
    """Send every record of this process, at `level` or above, to `stream` (stderr) as
    `log_format` lines naming `process`; `fields` go on every line (a sandbox's id, say).
    Replaces whatever handlers the root logger had. Returns the handler."""
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    kind = JsonFormatter if log_format == "json" else TextFormatter
    handler.setFormatter(kind(process, fields))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # httpx says INFO for every request it makes (up's readiness polls, the lifecycle's
    # calls to picod), URL and query included: only at DEBUG is that wanted.
    logging.getLogger("httpx").setLevel(level if level == "DEBUG" else "WARNING")
    return handler


def set_process_field(name: str, value: str) -> None:
    """Put `name=value` on every later line of this process (picod learns its sandbox id
    from `/init`)."""
    for handler in logging.getLogger().handlers:
        formatter = handler.formatter
        if isinstance(formatter, LineFormatter):
            formatter.fields[name] = value


# --- formatters -----------------------------------------------------------------------------


class LineFormatter(logging.Formatter):
    """What both formats share: the fields of one line, in order, and the redaction."""

    def __init__(self, process: str, fields: dict[str, str] | None = None) -> None:
        super().__init__()
        self.process = process
        self.pid = os.getpid()
        # On every line of the process; `set_process_field` adds to them.
        self.fields: dict[str, str] = dict(fields or {})
        self._second = -1
        self._second_text = ""

    def timestamp(self, created: float) -> str:
        """`utc_time(created)`, the seconds part formatted once a second."""
        second = int(created)
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._second_text}.{int((created - second) * 1000):03d}Z"

    def context_fields(self, record: logging.LogRecord) -> dict[str, Any]:
        """The process's fields, the request's (non-empty ones) and the record's extras."""
        found: dict[str, Any] = self.fields.copy() if self.fields else {}
        request = current_request()
        if request is not None:
            request_id, tenant, sandbox_id = request
            if request_id:
                found["request_id"] = request_id
            if tenant:
                found["tenant"] = tenant
            if sandbox_id:
                found["sandbox_id"] = sandbox_id
        attributes = record.__dict__
        if len(attributes) > _PLAIN_RECORD_SIZE:
            # `extra=` fields are set after LogRecord's own attributes, so they follow them
            # in the dict (a formatter may add `message` or `asctime` later still).
            for name in list(attributes)[_PLAIN_RECORD_SIZE:]:
                if name in _RECORD_ATTRIBUTES:
                    continue
                value = attributes[name]
                plain = value is None or isinstance(value, _PLAIN_TYPES)
                found[name] = value if plain else redact(str(value))
        return found

    def exception_text(self, record: logging.LogRecord) -> str:
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        text = record.exc_text or ""
        if record.stack_info:
            text = f"{text}\n{self.formatStack(record.stack_info)}" if text else record.stack_info
        return redact(text) if text else text

    def message(self, record: logging.LogRecord) -> str:
        return redact(record.getMessage())


class JsonFormatter(LineFormatter):
    """One JSON object per line, written out directly: a dict through `json.dumps` costs
    about twice as much (it builds an encoder per call)."""

    def format(self, record: logging.LogRecord) -> str:
        line = (
            f'{{"time":"{self.timestamp(record.created)}",'
            f'"level":{_quote(record.levelname.lower())},'
            f'"process":{_quote(self.process)},"pid":{self.pid},'
            f'"logger":{_quote(record.name)},"message":{_quote(self.message(record))}'
        )
        for name, value in self.context_fields(record).items():
            line += f",{_quote(name)}:{_json_value(value)}"
        exception = self.exception_text(record)
        if exception:
            line += f',"exception":{_quote(exception)}'
        return line + "}"


def _json_value(value: Any) -> str:
    """A field's value as JSON: a str (anything `context_fields` did not keep as a number,
    a bool or None) quoted; an int as is; the rest as `json.dumps` writes them."""
    if isinstance(value, str):
        return _quote(value)
    if type(value) is int:
        return str(value)
    return json.dumps(value)


class TextFormatter(LineFormatter):
    def format(self, record: logging.LogRecord) -> str:
        line = (
            f"{self.timestamp(record.created)} {record.levelname} {self.process} "
            f"{record.name}: {self.message(record)}"
        )
        fields = self.context_fields(record)
        if fields:
            line += " " + " ".join(f"{name}={value}" for name, value in fields.items())
        exception = self.exception_text(record)
        if exception:
            line += "\n" + exception
        return line


# --- children's output ----------------------------------------------------------------------


def child_line(name: str, line: bytes, log_format: str) -> bytes:
    """One line a child process of `up` wrote (ending in a newline), as `up` passes it on:
    text prefixes the child's name; json passes a JSON object through and wraps anything
    else (a traceback printed before logging was set up, a usage error) in one."""
    body = line.rstrip(b"\r\n")
    if log_format != "json":
        return b"[" + name.encode() + b"] " + body + b"\n"
    if body.startswith(b"{") and body.endswith(b"}"):
        return body + b"\n"
    entry = {
        "time": utc_time(time.time()),
        "level": "info",
        "process": name,
        "message": body.decode("utf-8", "replace"),
    }
    return redact(json.dumps(entry)).encode() + b"\n"


# Envoy's own log (spdlog pattern flags; %j is the message JSON-escaped) as JSON lines of the
# same shape, its time in the machine's time zone; its access log is JSON already
# (envoy_config/replies.py).
ENVOY_JSON_LOG_FORMAT = (
    '{"time":"%Y-%m-%dT%T.%e","level":"%l","process":"envoy","pid":%P,"logger":"%n","message":"%j"}'
)
