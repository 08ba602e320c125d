"""The lifecycle service's caller token and the metadata that asks for every tenant.

A caller of the lifecycle gRPC proves who it is with `authorization: Bearer <token>`, the
token being 32 random bytes in hex that `up` writes to a 0600 file in its private run
directory and hands to the lifecycle service and to the edge by path, never in argv (where
every local user could read it with `ps`). An empty tenant in a lifecycle request means "every
tenant" only when the call also carries `x-agentcube-e2b-scope: all-tenants`; the edge's
routing directory is the one caller that sends it.

Standard library only: the edge, the lifecycle service and `up` share it.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

AUTHORIZATION = "authorization"
BEARER = "Bearer "
SCOPE = "x-agentcube-e2b-scope"
ALL_TENANTS = "all-tenants"
# gRPC metadata for a call that covers every tenant
ALL_TENANTS_METADATA = ((SCOPE, ALL_TENANTS),)
_TOKEN_BYTES = 32


def new_token() -> str:
    return secrets.token_hex(_TOKEN_BYTES)


def write_token_file(path: Path, token: str) -> None:
    """Replace `path` with `token`, mode 0600 from creation on (written aside, renamed)."""
    aside = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as out:
            out.write(token + "\n")
        aside.replace(path)
    except BaseException:
        aside.unlink(missing_ok=True)
        raise


def read_token_file(path: Path, flag: str) -> str:
    """The token in `path`; ValueError naming `flag` when it is unreadable, empty or readable
    by other users."""
    try:
        mode = path.stat().st_mode
        token = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{flag}: cannot read {path}: {error}") from error
    if mode & 0o077:
        raise ValueError(f"{flag}: {path} is readable by other users; chmod 600 it")
    if not token:
        raise ValueError(f"{flag}: {path} is empty")
    return token
