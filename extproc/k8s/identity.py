"""The Secrets read at start-up: AgentCube's router identity, our token seed, and their errors.

The router identity (`picod-router-identity`: `private.pem` PKCS#1 or PKCS#8, `public.pem`
PKIX) belongs to AgentCube. Its router creates it in AgentCube's namespace
($AGENTCUBE_NAMESPACE; `agentcube` in its getting-started), and its CodeInterpreter
controller copies `public.pem` into every warm-pool pod as PICOD_AUTH_PUBLIC_KEY: picod there
accepts only JWTs signed with that key. So the gateway reads the Secret where AgentCube keeps
it and never makes a second key pair beside it. A missing Secret is an error that says so,
unless `create` asks for it to be made (a cluster without AgentCube; AgentCube's router,
installed later, then loads ours, as its create-or-get does).

Creating follows AgentCube's router (`TryStoreOrLoadJWTKeySecret`): read; if absent, create
with a fresh value; on AlreadyExists read the one that is there and drop ours. Racing
creators (replicas, AgentCube's own router) converge on the first writer, and nobody
overwrites a key others already use. The token seed (ours, in our namespace) is made alike.

What a person must fix (a Secret missing, forbidden or malformed) raises `SecretUnavailable`
with a one-line message naming the Secret, its namespace and the way out; the commands print
it and exit non-zero instead of a traceback.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Callable

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from extproc.core.errors import AlreadyExists, NotFound, Unavailable
from extproc.core.identity import KEY_BITS, PRIVATE_FILE, PUBLIC_FILE, RouterIdentity
from extproc.core.tokens import SEED_BYTES
from extproc.k8s.listwatch import KubeObject
from extproc.k8s.resources import SECRET, Resources

SEED_KEY = "seed"
MANAGED_LABELS = {"app.kubernetes.io/managed-by": "agentcube-e2b"}
# AgentCube's router labels the identity Secret so; one we create carries them too (and
# ours, which the lifecycle's admission policy asks of every Secret it writes).
IDENTITY_LABELS = {"app": "agentcube", "component": "router", **MANAGED_LABELS}
SEED_LABELS = dict(MANAGED_LABELS)
_FORBIDDEN = 403


class SecretUnavailable(Exception):
    """A Secret needed at start-up is missing, forbidden or unusable; the message (one line)
    names it and says what to do."""


class SecretMissing(SecretUnavailable):
    """The Secret does not exist (yet): a reader may wait for whoever creates it."""


def http_status(error: BaseException) -> int | None:
    """The HTTP status of the API error behind a `Resources` error (its `from` cause)."""
    status = getattr(error.__cause__, "status", None)
    return status if isinstance(status, int) else None


def _secret_unavailable(error: Unavailable, *, forbidden: str, failed: str) -> SecretUnavailable:
    """A 403 gets `forbidden`, which names the RBAC grant that is missing; any other failure
    `failed` with the API's message."""
    if http_status(error) == _FORBIDDEN:
        return SecretUnavailable(forbidden)
    return SecretUnavailable(f"{failed}: {error.message}")


async def read_secret(api: Resources, namespace: str, name: str, *, missing: str) -> KubeObject:
    """GET Secret `namespace/name`. SecretMissing (with `missing`, the way out) when absent;
    SecretUnavailable naming the RBAC grant on 403, and for any other failure."""
    where = f"{namespace}/{name}"
    try:
        return await api.get(SECRET, namespace, name)
    except NotFound as error:
        raise SecretMissing(f"Secret {where} not found: {missing}") from error
    except Unavailable as error:
        raise _secret_unavailable(
            error,
            forbidden=f"reading Secret {where} is forbidden: grant this service account `get` "
            f"on secrets named {name} in namespace {namespace} (a Role and RoleBinding there; "
            "see docs/kubernetes.md)",
            failed=f"cannot read Secret {where}",
        ) from error


async def read_or_create_secret(
    api: Resources, namespace: str, name: str, labels: dict[str, str],
    make: Callable[[], dict[str, bytes]],
) -> KubeObject:  # fmt: skip
    """Secret `namespace/name`; created with `make()`'s data if absent. Racing creators all
    end up with the first writer's data."""
    try:
        return await read_secret(api, namespace, name, missing="")
    except SecretMissing:
        pass
    body: KubeObject = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": name, "labels": dict(labels)},
        "data": {key: base64.b64encode(value).decode() for key, value in make().items()},
    }
    try:
        return await api.create(SECRET, namespace, body)
    except AlreadyExists:
        return await read_secret(api, namespace, name, missing="deleted while being created")
    except Unavailable as error:
        raise _secret_unavailable(
            error,
            forbidden=f"creating Secret {namespace}/{name} is forbidden: grant this service "
            f"account `create` on secrets in namespace {namespace}, or create the Secret "
            "yourself",
            failed=f"cannot create Secret {namespace}/{name}",
        ) from error


def secret_data(secret: KubeObject, key: str, where: str) -> bytes:
    """The decoded value of `data[key]`; SecretUnavailable when absent or not base64."""
    raw = (secret.get("data") or {}).get(key)
    if not isinstance(raw, str):
        raise SecretUnavailable(f"Secret {where} has no data key {key!r}")
    try:
        return base64.b64decode(raw, validate=True)
    except binascii.Error as error:
        raise SecretUnavailable(f"Secret {where}: {key!r} is not base64") from error


def _new_identity() -> dict[str, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,  # PKCS#1 "RSA PRIVATE KEY", as AgentCube
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return {PRIVATE_FILE: private, PUBLIC_FILE: public}


def _checked_identity(private_pem: bytes, public_pem: bytes, where: str) -> RouterIdentity:
    """The pair as stored, once it is known to be an RSA key pair that belongs together:
    signing with a key whose public half is not the one picod trusts would fail every
    request, far from the cause."""
    try:
        # PKCS#1 ("RSA PRIVATE KEY") and PKCS#8 ("PRIVATE KEY") alike
        private = serialization.load_pem_private_key(private_pem, password=None)
    except (ValueError, TypeError) as error:  # TypeError: encrypted, no password given
        raise SecretUnavailable(
            f"Secret {where}: {PRIVATE_FILE} is not an unencrypted PEM private key"
        ) from error
    try:
        public = serialization.load_pem_public_key(public_pem)
    except ValueError as error:
        raise SecretUnavailable(f"Secret {where}: {PUBLIC_FILE} is not a PEM public key") from error
    if not isinstance(private, rsa.RSAPrivateKey) or not isinstance(public, rsa.RSAPublicKey):
        raise SecretUnavailable(f"Secret {where}: the router identity must be an RSA key pair")
    if private.key_size < KEY_BITS:
        raise SecretUnavailable(
            f"Secret {where}: a {private.key_size}-bit RSA key is too short (at least {KEY_BITS})"
        )
    if private.public_key().public_numbers() != public.public_numbers():
        raise SecretUnavailable(
            f"Secret {where}: {PUBLIC_FILE} is not the public half of {PRIVATE_FILE}; picod "
            "would reject every JWT signed with it. Fix the Secret (AgentCube's router and "
            "its warm-pool pods use it too)"
        )
    return RouterIdentity(private_pem=private_pem, public_pem=public_pem)


def _missing_identity(namespace: str) -> str:
    return (
        "it holds the key pair AgentCube's router signs picod JWTs with (AgentCube's warm-pool "
        "pods trust only that key), and AgentCube's router creates it when it starts. Install "
        f"AgentCube, or set --identity-namespace to the namespace it runs in (its "
        f"$AGENTCUBE_NAMESPACE; now {namespace}), or start the lifecycle service with "
        "--create-identity to create it (for clusters without AgentCube)"
    )


async def load_identity(
    api: Resources, namespace: str, name: str, *, create: bool
) -> RouterIdentity:
    """The router identity from Secret `namespace/name`.

    `create`: make the Secret (RSA-2048, PKCS#1 + PKIX, AgentCube's labels) when absent;
    else a missing Secret raises SecretMissing saying what to do. SecretUnavailable when it
    is forbidden or its keys are not one RSA pair.
    """
    where = f"{namespace}/{name}"
    if create:
        secret = await read_or_create_secret(api, namespace, name, IDENTITY_LABELS, _new_identity)
    else:
        secret = await read_secret(api, namespace, name, missing=_missing_identity(namespace))
    return _checked_identity(
        secret_data(secret, PRIVATE_FILE, where), secret_data(secret, PUBLIC_FILE, where), where
    )


async def load_or_create_seed(api: Resources, namespace: str, name: str) -> bytes:
    """The envd access-token seed from Secret `namespace/name` (hex under `seed`), created
    first if absent."""

    def make() -> dict[str, bytes]:
        return {SEED_KEY: secrets.token_hex(SEED_BYTES).encode()}

    secret = await read_or_create_secret(api, namespace, name, SEED_LABELS, make)
    where = f"{namespace}/{name}"
    try:
        seed = bytes.fromhex(secret_data(secret, SEED_KEY, where).decode("ascii").strip())
    except (UnicodeDecodeError, ValueError) as exc:
        raise SecretUnavailable(f"Secret {where}: {SEED_KEY!r} is not hex") from exc
    if len(seed) < 16:
        raise SecretUnavailable(f"Secret {where}: the seed is shorter than 16 bytes")
    return seed
