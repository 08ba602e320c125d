"""Sandbox ids: 20 characters of [a-z0-9].

No '-' and no upper case, because sandbox hosts are `{port}-{id}.{domain}` and E2B's proxy
splits the first label on '-' and checks `^[a-z0-9]+$` (notes §7).
"""

from __future__ import annotations

import re
import secrets

from extproc.core.errors import InvalidArgument, NotFound

ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
LENGTH = 20
_PATTERN = re.compile(rf"[a-z0-9]{{{LENGTH}}}")


def new_sandbox_id() -> str:
    """A fresh id: 20 * log2(36) ~ 103 bits from the OS CSPRNG."""
    return "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))


def is_sandbox_id(value: str) -> bool:
    return _PATTERN.fullmatch(value) is not None


def check_sandbox_id(value: str) -> str:
    """Return `value` if it is a well-formed id, else raise InvalidArgument."""
    if not is_sandbox_id(value):
        raise InvalidArgument(
            f"invalid sandbox id {value[:64]!r}: expected {LENGTH} characters of [a-z0-9]"
        )
    return value


def not_found(value: str) -> NotFound:
    """What any id that names no live sandbox of the caller gets, malformed ones included:
    E2B answers 404 for every unknown id (the SDK's kill then returns False)."""
    shown = value if is_sandbox_id(value) else repr(value[:64])
    return NotFound(f"sandbox {shown} not found")
