"""Proof that a Sandbox object was written by the lifecycle service, not by a tenant.

A tenant that may create Sandbox CRs in its own namespace may put any labels on them,
including another tenant's `e2b.agentcube.io/sandbox-id` (ids are in every hostname). Labels
and namespaces alone therefore cannot say which object *is* sandbox X. So the lifecycle
service annotates every Sandbox it creates or adopts with an HMAC over the object's
namespace, name and id, keyed with a secret only the gateway holds; readers (the lifecycle's
indexes, the edge's directory) count only objects whose annotation verifies.

Why it holds: the key lives in a Secret in the gateway's own namespace, which tenants cannot
read. A copied annotation does not help an attacker either: it binds the victim's namespace
and name, and an object in another namespace, or with another name, has a different message.
The one object that verifies for id X in namespace N with name M is the one we wrote.

The key Secret follows the create-or-read rule of identity.py: racing lifecycle replicas
converge on the first writer's key, and nobody ever overwrites a key others use. The edge
only reads it (its service account may not create Secrets) and fails clearly when absent.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from typing import Any

from extproc.core.errors import AlreadyExists, NotFound
from extproc.k8s.listwatch import KubeObject
from extproc.k8s.resources import SECRET, Resources

# The id label the lifecycle puts on Sandboxes and their pods (docs/contracts/README.md).
SANDBOX_ID_LABEL = "e2b.agentcube.io/sandbox-id"
PROOF_ANNOTATION = "e2b.agentcube.io/proof"
# The Secret's data key and the size of a fresh key, bytes. Shorter keys are refused.
KEY_DATA = "key"
KEY_BYTES = 32
MIN_KEY_BYTES = 16
DEFAULT_SECRET_NAME = "e2b-object-proof-key"  # noqa: S105 - a Secret's name
KEY_LABELS = {"app.kubernetes.io/managed-by": "agentcube-e2b"}


def proof_of(key: bytes, namespace: str, name: str, sandbox_id: str) -> str:
    """hex HMAC-SHA256(key, "namespace\\nname\\nsandbox_id"): the annotation's value.

    Newlines cannot occur in any of the three (DNS names, ids of [a-z0-9]), so no two
    objects share a message.
    """
    message = f"{namespace}\n{name}\n{sandbox_id}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _text(mapping: Any, key: str) -> str:
    value = mapping.get(key) if isinstance(mapping, dict) else None
    return value if isinstance(value, str) else ""


def has_valid_proof(key: bytes, obj: KubeObject) -> bool:
    """True when `obj` carries the proof for its own namespace, name and id label.

    False for anything missing or malformed; compared in constant time.
    """
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict) or not key:
        return False
    namespace, name = _text(metadata, "namespace"), _text(metadata, "name")
    sandbox_id = _text(metadata.get("labels"), SANDBOX_ID_LABEL)
    given = _text(metadata.get("annotations"), PROOF_ANNOTATION)
    if not (namespace and name and sandbox_id and given):
        return False
    expected = proof_of(key, namespace, name, sandbox_id)
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "surrogatepass"))


def _key_secret(name: str, key: bytes) -> KubeObject:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": name, "labels": dict(KEY_LABELS)},
        "data": {KEY_DATA: base64.b64encode(key).decode()},
    }


def _key_of(secret: KubeObject, where: str) -> bytes:
    raw = (secret.get("data") or {}).get(KEY_DATA)
    if not isinstance(raw, str):
        raise ValueError(f"Secret {where} has no data key {KEY_DATA!r}")
    try:
        key = base64.b64decode(raw, validate=True)
    except binascii.Error as error:
        raise ValueError(f"Secret {where}: {KEY_DATA!r} is not base64") from error
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"Secret {where}: the key is shorter than {MIN_KEY_BYTES} bytes")
    return key


async def load_or_create_proof_key(api: Resources, namespace: str, name: str) -> bytes:
    """The lifecycle's side: the key from Secret `namespace/name`, created first if absent."""
    try:
        secret = await api.create(
            SECRET, namespace, _key_secret(name, secrets.token_bytes(KEY_BYTES))
        )
    except AlreadyExists:
        secret = await api.get(SECRET, namespace, name)
    return _key_of(secret, f"{namespace}/{name}")


async def load_proof_key(api: Resources, namespace: str, name: str) -> bytes:
    """The edge's side: read the key, never create it.

    ValueError with what to do when the Secret is absent (the lifecycle service creates it
    at its start) or unusable; Unavailable when the API cannot be asked.
    """
    try:
        secret = await api.get(SECRET, namespace, name)
    except NotFound as error:
        raise ValueError(
            f"Secret {namespace}/{name} (the key proving which Sandboxes the gateway made) does "
            "not exist: the lifecycle service creates it when it starts; start it first, or "
            "point the edge at its namespace and Secret name"
        ) from error
    return _key_of(secret, f"{namespace}/{name}")
