"""`agentcube-e2b keys ... --kubernetes`: the key documents written through the API.

Every write is a JSON merge patch (RFC 7386) naming only the key it changes, so two admins
creating keys at once cannot clobber each other's entries, and nothing is read-modified-
written. A document that does not exist yet is created (and, if someone else created it in
the meantime, patched after all).

Order: the ConfigMap entry (tenant, label) is written before the Secret marks the key
`valid`, so an informer never sees a valid key without its tenant, i.e. in the default
namespace. A failure between the two leaves a harmless ConfigMap entry of a key that does not
exist yet.

Blocking calls: this is a one-shot CLI, not a server.
"""

from __future__ import annotations

import json
from typing import Any

import urllib3
from kubernetes.client import ApiClient, CoreV1Api, V1ConfigMap, V1Secret
from kubernetes.client.exceptions import ApiException

from extproc.core.api_keys import (
    DEFAULT_NAMESPACE_KEY,
    FALLBACK_NAMESPACE,
    NAME_PREFIX,
    KeyIndex,
    KeyStatus,
    parse_key_documents,
)
from extproc.core.errors import Unavailable
from extproc.k8s.settings import KeySourceSettings

MERGE_PATCH = "application/merge-patch+json"
# Seconds to connect and to read each answer.
_TIMEOUT = (5.0, 30.0)


class KeyWriter:
    def __init__(self, client: ApiClient, keys: KeySourceSettings) -> None:
        self._core = CoreV1Api(client)
        self._keys = keys

    # --- reading ------------------------------------------------------------------------

    def read_index(self) -> KeyIndex:
        """The index as the edge would build it (a missing document counts as empty)."""
        secret = self._read(self._core.read_namespaced_secret, self._keys.secret_name)
        config = self._read(self._core.read_namespaced_config_map, self._keys.config_name)
        return parse_key_documents(secret, config)

    def _read(self, call: Any, name: str) -> dict[str, Any] | None:
        try:
            return _json(call(name, self._keys.namespace, **_RAW))
        except ApiException as error:
            if error.status == 404:
                return None
            raise _unavailable(error, f"read {self._keys.namespace}/{name}") from error
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise Unavailable(f"read {self._keys.namespace}/{name}: {error}") from error

    # --- writing ------------------------------------------------------------------------

    def create(self, key_hash: str, namespace: str | None, label: str) -> str:
        """Record a new valid key: ConfigMap entries first, then the Secret. Returns the
        key's tenant (`namespace`, else the ConfigMap's defaultNamespace)."""
        data: dict[str, str] = {}
        if namespace:
            data[key_hash] = namespace
        if label:
            data[NAME_PREFIX + key_hash] = label
        config = self._merge_config(data) if data else None
        if config is None:
            config = self._read(self._core.read_namespaced_config_map, self._keys.config_name)
        self.set_status(key_hash, KeyStatus.VALID)
        if namespace:
            return namespace
        found = ((config or {}).get("data") or {}).get(DEFAULT_NAMESPACE_KEY)
        return str(found or FALLBACK_NAMESPACE)

    def set_status(self, key_hash: str, status: KeyStatus) -> None:
        patch = {"stringData": {key_hash: status.value}}
        self._patch_or_create(
            "Secret", self._core.patch_namespaced_secret, self._core.create_namespaced_secret,
            self._keys.secret_name, patch, {"type": "Opaque", **patch},
        )  # fmt: skip

    def _merge_config(self, data: dict[str, str]) -> dict[str, Any]:
        patch = {"data": data}
        created = {"data": {DEFAULT_NAMESPACE_KEY: FALLBACK_NAMESPACE, **data}}
        return self._patch_or_create(
            "ConfigMap", self._core.patch_namespaced_config_map,
            self._core.create_namespaced_config_map, self._keys.config_name, patch, created,
        )  # fmt: skip

    def _patch_or_create(
        self,
        kind: str,
        patch_call: Any,
        create_call: Any,
        name: str,
        patch: dict[str, Any],
        created: dict[str, Any],
    ) -> dict[str, Any]:
        """Merge-patch `name`; if it does not exist, create it with `created`; if that
        races with another creator (409), merge-patch after all."""
        namespace = self._keys.namespace
        try:
            try:
                return _json(patch_call(name, namespace, patch, **_PATCH))
            except ApiException as error:
                if error.status != 404:
                    raise
            document = {
                "apiVersion": "v1",
                "kind": kind,
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "labels": {"app.kubernetes.io/managed-by": "agentcube-e2b"},
                },
                **created,
            }
            model = (V1Secret if kind == "Secret" else V1ConfigMap).from_dict(document)
            try:
                # No Content-Type: the generated create methods drop `_content_type`; the
                # API server then reads JSON, its first supported type.
                return _json(create_call(namespace, model, **_RAW))
            except ApiException as error:
                if error.status != 409:
                    raise
            return _json(patch_call(name, namespace, patch, **_PATCH))
        except ApiException as error:
            raise _unavailable(error, f"write {kind} {namespace}/{name}") from error
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise Unavailable(f"write {kind} {namespace}/{name}: {error}") from error


_RAW: dict[str, Any] = {"_preload_content": False, "_request_timeout": _TIMEOUT}
_PATCH: dict[str, Any] = {**_RAW, "_content_type": MERGE_PATCH}


def _json(response: Any) -> dict[str, Any]:
    try:
        document: dict[str, Any] = json.loads(response.data)
    finally:
        response.release_conn()
    return document


def _unavailable(error: ApiException, what: str) -> Unavailable:
    return Unavailable(f"{what}: HTTP {error.status} {error.reason or ''}".strip())
