"""Reading and atomically writing the two key documents in `<state-dir>/keys/`.

Writers (the `keys` command, `up`) replace a file by rename, so the watcher sees either the
old or the new document, never half of one. The ConfigMap is written before the Secret: a
key becomes valid only once its namespace is already in place.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from extproc.core.api_keys import (
    CONFIG_NAME,
    SECRET_NAME,
    KeyIndex,
    KeyStatus,
    parse_key_documents,
    render_key_documents,
)
from extproc.core.documents import json_object
from extproc.core.errors import ResourceExhausted

SECRET_FILE = SECRET_NAME + ".json"
CONFIG_FILE = CONFIG_NAME + ".json"


def _read_document(path: Path) -> dict[str, Any] | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    return json_object(text, path.name)


def read_key_index(directory: Path) -> KeyIndex:
    """Parse both files (a missing file counts as empty). Raises InvalidArgument if invalid."""
    return parse_key_documents(
        _read_document(directory / SECRET_FILE), _read_document(directory / CONFIG_FILE)
    )


def write_atomically(path: Path, content: str, mode: int = 0o600) -> None:
    """Replace `path` by rename. On a full disk the old file stays as it was and the error
    is ResourceExhausted, naming the file."""
    try:
        _write_atomically(path, content, mode)
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
        raise ResourceExhausted(
            f"no space left on device writing {path}; it was left unchanged: free space and retry"
        ) from error


def _write_atomically(path: Path, content: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        Path(temp).replace(path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def write_key_index(directory: Path, index: KeyIndex) -> None:
    """Write `index` back as the two documents (config first, then the secret)."""
    statuses: dict[str, KeyStatus] = {}
    namespaces: dict[str, str] = {}
    names: dict[str, str] = {}
    for key_hash, entry in index.entries.items():
        statuses[key_hash] = entry.status
        if entry.namespace != index.default_namespace:
            namespaces[key_hash] = entry.namespace
        names[key_hash] = entry.name
    secret, config = render_key_documents(
        statuses, namespaces, names, index.default_namespace, index.quotas_source
    )
    write_atomically(directory / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    write_atomically(directory / SECRET_FILE, json.dumps(secret, indent=2) + "\n")
