"""JSON documents read from files, Secrets and ConfigMaps: one parse with one error shape."""

from __future__ import annotations

import json
from typing import Any

from extproc.core.errors import InvalidArgument


def json_object(text: str, source: str, expected: str = "a JSON object") -> dict[str, Any]:
    """`text` parsed as a JSON object, or InvalidArgument naming `source` and what is wrong."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidArgument(f"{source}: not JSON ({error.msg} at line {error.lineno})") from error
    if not isinstance(document, dict):
        raise InvalidArgument(f"{source}: expected {expected}")
    return document
