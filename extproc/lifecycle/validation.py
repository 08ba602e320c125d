"""Checks on user-supplied maps, with messages that say what to change."""

from __future__ import annotations

import re

from extproc.core.errors import InvalidArgument

MAX_METADATA_PAIRS = 64
MAX_METADATA_BYTES = 16 * 1024
MAX_ENV_VARS = 256
MAX_ENV_BYTES = 64 * 1024
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _size(pairs: dict[str, str]) -> int:
    return sum(len(k.encode()) + len(v.encode()) for k, v in pairs.items())


def check_metadata(metadata: dict[str, str]) -> dict[str, str]:
    if len(metadata) > MAX_METADATA_PAIRS:
        raise InvalidArgument(
            f"metadata has {len(metadata)} pairs; at most {MAX_METADATA_PAIRS} are allowed"
        )
    if _size(metadata) > MAX_METADATA_BYTES:
        raise InvalidArgument(
            f"metadata is {_size(metadata)} bytes; at most {MAX_METADATA_BYTES} bytes are allowed"
        )
    if any(not k for k in metadata):
        raise InvalidArgument("metadata keys must not be empty")
    return dict(metadata)


def check_env_vars(env: dict[str, str]) -> dict[str, str]:
    if len(env) > MAX_ENV_VARS or _size(env) > MAX_ENV_BYTES:
        raise InvalidArgument(
            f"envVars too large: at most {MAX_ENV_VARS} variables and {MAX_ENV_BYTES} bytes"
        )
    for name, value in env.items():
        if not _ENV_NAME.fullmatch(name):
            raise InvalidArgument(
                f"invalid env var name {name[:64]!r}: expected [A-Za-z_][A-Za-z0-9_]*"
            )
        if "\0" in value:
            raise InvalidArgument(f"env var {name} contains a NUL byte")
    return dict(env)
