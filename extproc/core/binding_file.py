"""The binding file: which sandbox a pod's daemons serve, as picod's `/init` bound it.

A warm-pool pod starts before any E2B sandbox exists; picod learns its sandbox id and
access token from `POST /init` (picod/binding.py) and keeps them in `binding.json` in its
state directory. The code interpreter in the same pod has no `/init` of its own, so it reads
the same file (interpreter/binding.py). The format is defined here only, for both:

    {"sandboxId": "<20 chars of [a-z0-9]>" | null, "accessToken": "<1-1024 visible ASCII>" | null}

The file is 0600 (it holds the token, with which signed `/files` URLs are verified) and is
replaced atomically, so a reader sees the old binding or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from extproc.core.ids import is_sandbox_id

FILE_NAME = "binding.json"
# A token comes back in the X-Access-Token header: visible ASCII, of a sane length.
MAX_TOKEN_CHARS = 1024
_TOKEN = re.compile(rf"[\x21-\x7e]{{1,{MAX_TOKEN_CHARS}}}")


@dataclass(frozen=True)
class SandboxBinding:
    # The sandbox served; None: none yet (a token may be set before the id).
    sandbox_id: str | None
    # envd's X-Access-Token; None: none required. Kept out of repr, so never logged.
    access_token: str | None = field(default=None, repr=False)


def is_access_token(value: object) -> bool:
    """Whether `value` is usable as an access token (what `/init` accepts)."""
    return isinstance(value, str) and _TOKEN.fullmatch(value) is not None


def parse(raw: bytes, source: Path, flag_id: str | None = None) -> SandboxBinding:
    """The binding in `raw`, read from `source`; ValueError names `source` and what is wrong.

    `flag_id` is the sandbox id a daemon was started with (None: none): such an id is taken
    as given even when it is not a generated one, and the file must not name another.
    Errors never quote the token.
    """
    try:
        state = json.loads(raw)
    except ValueError as e:
        raise ValueError(f"{source}: not JSON: {e}") from e
    if not isinstance(state, dict):
        raise ValueError(f"{source}: expected a JSON object")
    sandbox_id, token = state.get("sandboxId"), state.get("accessToken")
    if flag_id is not None and sandbox_id not in (None, flag_id):
        raise ValueError(f"{source} binds another sandbox than --sandbox-id")
    if sandbox_id is not None and not (
        isinstance(sandbox_id, str) and (is_sandbox_id(sandbox_id) or sandbox_id == flag_id)
    ):
        raise ValueError(f"{source}: sandboxId is not a sandbox id")
    if token is not None and not is_access_token(token):
        raise ValueError(f"{source}: accessToken is not a usable token")
    return SandboxBinding(sandbox_id, token)


def read(path: Path, flag_id: str | None = None) -> SandboxBinding | None:
    """The binding in the file at `path`; None when there is no such file.

    ValueError when it cannot be read or is malformed (see `parse`).
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ValueError(f"cannot read the binding state {path}: {e.strerror}") from e
    return parse(raw, path, flag_id)


def write(path: Path, binding: SandboxBinding) -> None:
    """Replace `path` atomically with a 0600 file, durable before this returns (OSError)."""
    body = json.dumps({"sandboxId": binding.sandbox_id, "accessToken": binding.access_token})
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()  # left by a crash mid-write
    with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
        f.write(body.encode())
        f.flush()
        os.fsync(f.fileno())
    partial.replace(path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
