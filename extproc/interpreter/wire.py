"""The HTTP edge of the interpreter: its statuses for domain errors (core/asgi.py's table)
and the readers of its JSON request bodies.

Error bodies are E2B's `{"code": <status>, "message": ...}`: the SDK puts the body text in
its exception message, so the message says what was wrong and nothing internal.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from extproc.core import errors
from extproc.core.asgi import ERROR_STATUS as HTTP_ERROR_STATUS
from extproc.core.asgi import Send, status_for
from extproc.core.asgi import send_error as send_error_body
from extproc.core.json_fields import optional_field

log = logging.getLogger(__name__)

# A body over --max-body-bytes (asgi.BodyTooLarge) is the only ResourceExhausted here.
ERROR_STATUS = {**HTTP_ERROR_STATUS, errors.ResourceExhausted: 413}
# Anything else is a bug here: 500 with a message that leaks no internals.
DEFAULT_ERROR = (500, "internal error in the code interpreter")


def error_status(error: BaseException) -> tuple[int, str]:
    status = status_for(error, ERROR_STATUS)
    if status is None:
        return DEFAULT_ERROR
    return status, str(getattr(error, "message", error))


async def send_error(send: Send, error: BaseException) -> None:
    status, message = error_status(error)
    if status == DEFAULT_ERROR[0]:
        log.error("unexpected error", exc_info=error)
    await send_error_body(send, status, message)


def json_object(body: bytes, *, empty_ok: bool = False) -> dict[str, Any]:
    if not body.strip() and empty_ok:
        return {}
    try:
        value = json.loads(body)
    # ValueError: not JSON or not UTF-8; RecursionError: nested deeper than the parser goes.
    except (ValueError, RecursionError) as e:
        raise errors.InvalidArgument(f"request body is not valid JSON: {e}") from e
    if not isinstance(value, dict):
        raise errors.InvalidArgument("request body must be a JSON object")
    return value


def optional_str(body: dict[str, Any], key: str) -> str | None:
    return optional_field(body, key, str, f"{key!r} must be a string or null")


def string_map(body: dict[str, Any], key: str) -> dict[str, str]:
    message = f"{key!r} must be an object of string values or null"
    value = optional_field(body, key, dict, message)
    if value is None:
        return {}
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise errors.InvalidArgument(message)
    return value
