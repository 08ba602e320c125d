"""The two Secrets the lifecycle service needs: the router identity and the token seed.

Both follow AgentCube's router (`TryStoreOrLoadJWTKeySecret`): try to create the Secret with
a freshly generated value; on AlreadyExists read the one that is there and discard ours. So
racing creators (replicas, AgentCube's own router) all converge on the first writer, and no
one ever overwrites a key others already use.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from extproc.core.errors import AlreadyExists
from extproc.core.identity import KEY_BITS, PRIVATE_FILE, PUBLIC_FILE, RouterIdentity
from extproc.core.tokens import SEED_BYTES
from extproc.k8s.listwatch import KubeObject
from extproc.k8s.resources import SECRET, Resources

SEED_KEY = "seed"
# AgentCube's router labels the identity Secret so; we keep them for one shared object.
IDENTITY_LABELS = {"app": "agentcube", "component": "router"}
SEED_LABELS = {"app.kubernetes.io/managed-by": "agentcube-e2b"}


def _secret(name: str, labels: dict[str, str], data: dict[str, bytes]) -> KubeObject:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": name, "labels": dict(labels)},
        "data": {key: base64.b64encode(value).decode() for key, value in data.items()},
    }


def _data(secret: KubeObject, key: str, where: str) -> bytes:
    raw = (secret.get("data") or {}).get(key)
    if not isinstance(raw, str):
        raise ValueError(f"Secret {where} has no data key {key!r}")
    return base64.b64decode(raw)


async def _create_or_read(
    api: Resources, namespace: str, name: str, labels: dict[str, str],
    make: Callable[[], dict[str, bytes]],
) -> KubeObject:  # fmt: skip
    try:
        return await api.create(SECRET, namespace, _secret(name, labels, make()))
    except AlreadyExists:
        return await api.get(SECRET, namespace, name)


def _new_identity() -> dict[str, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,  # PKCS#1 "RSA PRIVATE KEY"
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return {PRIVATE_FILE: private, PUBLIC_FILE: public}


async def load_or_create_identity(api: Resources, namespace: str, name: str) -> RouterIdentity:
    """The router identity from Secret `namespace/name`, created first if absent."""
    secret = await _create_or_read(api, namespace, name, IDENTITY_LABELS, _new_identity)
    where = f"{namespace}/{name}"
    return RouterIdentity(
        private_pem=_data(secret, PRIVATE_FILE, where),
        public_pem=_data(secret, PUBLIC_FILE, where),
    )


async def load_or_create_seed(api: Resources, namespace: str, name: str) -> bytes:
    """The envd access-token seed from Secret `namespace/name` (hex under `seed`)."""

    def make() -> dict[str, bytes]:
        return {SEED_KEY: secrets.token_hex(SEED_BYTES).encode()}

    secret = await _create_or_read(api, namespace, name, SEED_LABELS, make)
    where = f"{namespace}/{name}"
    try:
        seed = bytes.fromhex(_data(secret, SEED_KEY, where).decode("ascii").strip())
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"Secret {where}: {SEED_KEY!r} is not hex") from exc
    if len(seed) < 16:
        raise ValueError(f"Secret {where}: the seed is shorter than 16 bytes")
    return seed
