"""The E2B API key model: format, hashing, statuses and the two documents that store them.

Only sha256(key) hex is ever stored. The documents have the shapes of AgentCube's Kubernetes
objects (Secret `e2b-api-keys`: hash -> status; ConfigMap `e2b-api-key-config`: hash ->
namespace, `defaultNamespace`, `name.<hash>` -> label) so the local state directory and a
cluster informer feed the same parser. Everything here is pure: no files, no clocks.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from extproc.core.errors import InvalidArgument
from extproc.core.quotas import DEFAULT_TABLE, QUOTAS_KEY, QuotaTable, parse_quotas

KEY_PREFIX = "e2b_"
# 40 hex characters after the prefix: 160 random bits, the length E2B's tests use.
KEY_HEX_LENGTH = 40
_KEY_RE = re.compile(r"^e2b_[0-9a-f]{40}$")
_HASH_RE = re.compile(r"^[0-9a-f]{64}$")
SECRET_NAME = "e2b-api-keys"  # noqa: S105 - a Kubernetes object name, not a secret
CONFIG_NAME = "e2b-api-key-config"
DEFAULT_NAMESPACE_KEY = "defaultNamespace"
NAME_PREFIX = "name."
FALLBACK_NAMESPACE = "default"


class KeyStatus(enum.Enum):
    VALID = "valid"
    REVOKED = "revoked"
    EXPIRED = "expired"


def new_api_key() -> str:
    """A fresh key: `e2b_` + 40 lowercase hex characters from the OS CSPRNG."""
    return KEY_PREFIX + secrets.token_hex(KEY_HEX_LENGTH // 2)


def is_api_key(text: str) -> bool:
    return _KEY_RE.match(text) is not None


def hash_api_key(key: str) -> str:
    """sha256 hex of the key exactly as the client sent it (no normalisation)."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class KeyEntry:
    key_hash: str
    status: KeyStatus
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class KeyIndex:
    """An immutable hash -> entry map; readers hold a reference, writers swap a new one."""

    entries: Mapping[str, KeyEntry]
    default_namespace: str
    # Per-namespace quotas from the ConfigMap's `quotas` key (core/quotas.py). The raw text is
    # kept so a writer puts it back verbatim; a text that does not parse leaves the defaults
    # in `quotas` and says why in `quotas_error` (the keys themselves still load).
    quotas: QuotaTable = DEFAULT_TABLE
    quotas_source: str = ""
    quotas_error: str = ""

    def lookup(self, key_hash: str) -> KeyEntry | None:
        return self.entries.get(key_hash)

    def __len__(self) -> int:
        return len(self.entries)


EMPTY_INDEX = KeyIndex(MappingProxyType({}), FALLBACK_NAMESPACE)


def _string_map(document: Mapping[str, Any], field: str, where: str) -> dict[str, str]:
    value = document.get(field)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise InvalidArgument(f"{where}: {field!r} must be an object of strings")
    return dict(value)


def _quotas(text: str) -> tuple[QuotaTable, str]:
    try:
        return parse_quotas(text), ""
    except InvalidArgument as error:
        return DEFAULT_TABLE, f"{CONFIG_NAME}: {error.message}; using the default quotas"


def _secret_statuses(secret: Mapping[str, Any]) -> dict[str, str]:
    # A real Secret carries base64 `data`; the local file uses plain `stringData`. Both are
    # accepted, stringData winning, exactly as the API server merges them.
    raw: dict[str, str] = {}
    for key, encoded in _string_map(secret, "data", SECRET_NAME).items():
        try:
            raw[key] = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as error:
            raise InvalidArgument(f"{SECRET_NAME}: data[{key[:12]}...] is not base64") from error
    raw.update(_string_map(secret, "stringData", SECRET_NAME))
    return raw


def parse_key_documents(
    secret: Mapping[str, Any] | None, config: Mapping[str, Any] | None
) -> KeyIndex:
    """Build the index from the Secret- and ConfigMap-shaped documents (either may be absent).

    Raises InvalidArgument naming the document and key when a value has the wrong shape; the
    caller keeps its last good index then.
    """
    statuses = _secret_statuses(secret or {})
    config_data = _string_map(config or {}, "data", CONFIG_NAME)
    default_namespace = config_data.get(DEFAULT_NAMESPACE_KEY) or FALLBACK_NAMESPACE
    entries: dict[str, KeyEntry] = {}
    for key_hash, status_text in statuses.items():
        if _HASH_RE.match(key_hash) is None:
            raise InvalidArgument(f"{SECRET_NAME}: {key_hash[:12]!r}... is not a sha256 hex key")
        try:
            status = KeyStatus(status_text.strip().lower())
        except ValueError as error:
            raise InvalidArgument(
                f"{SECRET_NAME}: status of {key_hash[:12]}... is {status_text!r}, "
                "expected valid, revoked or expired"
            ) from error
        entries[key_hash] = KeyEntry(
            key_hash=key_hash,
            status=status,
            namespace=config_data.get(key_hash) or default_namespace,
            name=config_data.get(NAME_PREFIX + key_hash, ""),
        )
    quotas_source = config_data.get(QUOTAS_KEY, "")
    quotas, quotas_error = _quotas(quotas_source)
    return KeyIndex(
        MappingProxyType(entries), default_namespace, quotas, quotas_source, quotas_error
    )


def render_key_documents(
    statuses: Mapping[str, KeyStatus],
    namespaces: Mapping[str, str],
    names: Mapping[str, str],
    default_namespace: str,
    quotas: str = "",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The (Secret, ConfigMap) documents for a set of keys (and the `quotas` JSON text, if
    any), ready to serialise as JSON."""
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET_NAME},
        "stringData": {h: s.value for h, s in sorted(statuses.items())},
    }
    data: dict[str, str] = {DEFAULT_NAMESPACE_KEY: default_namespace}
    data.update(sorted(namespaces.items()))
    data.update({NAME_PREFIX + h: n for h, n in sorted(names.items()) if n})
    if quotas:
        data[QUOTAS_KEY] = quotas
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CONFIG_NAME},
        "data": data,
    }
    return secret, config


def validate_namespace(namespace: str) -> str:
    """A Kubernetes namespace name (RFC 1123 label), since a tenant becomes one on a cluster."""
    if re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", namespace) is None:
        raise InvalidArgument(
            f"namespace {namespace!r} must be a DNS label: lowercase letters, digits and '-'"
        )
    return namespace
