"""Fields of a JSON request body, checked as they are read: the one reader of an optional
typed field, for the platform API (edge/rest_requests.py) and the code interpreter.

A field that is absent or null is None; one of another type is an InvalidArgument with the
caller's message (each API words its own). JSON has no separate integer type in Python's
eyes from a boolean (`True` is an `int`), so a boolean never passes for an integer here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from extproc.core.errors import InvalidArgument

T = TypeVar("T")


def optional_field(body: Mapping[str, Any], key: str, kind: type[T], message: str) -> T | None:
    """`body[key]` when it is a `kind`; None when absent or null; else InvalidArgument."""
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise InvalidArgument(message)
    return value
