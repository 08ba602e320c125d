"""Who the gateway's processes are: the router identity, and the lifecycle gRPC's TLS pairs.

The router identity is the RSA key pair the edge signs PicoD JWTs with. It mirrors
AgentCube's Secret `picod-router-identity` (`private.pem` PKCS#1, `public.pem` PKIX), so a
picod built for AgentCube verifies our tokens unchanged. Locally it is two files: `up`, the
edge and the lifecycle service may all start at once and each call this; files are published
with `os.link` from a private temp file, so exactly one key pair wins and nobody reads half a
file. In Kubernetes mode it is read from that Secret (extproc.k8s.identity).

`TlsIdentity` is one side of the lifecycle gRPC's mutual TLS in Kubernetes mode (the server
or the edge as its client): the CA that vouches for the other side, and this side's own
certificate and key (extproc.k8s.lifecycle_tls makes and reads them). Plain data here, so the
edge and the lifecycle can carry it in their settings without importing the Kubernetes
client.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

PRIVATE_FILE = "private.pem"
PUBLIC_FILE = "public.pem"
KEY_BITS = 2048
# The names in the lifecycle gRPC's TLS certificates: the server's (also the lifecycle
# Service's name, k8s/base/services.yaml) and the one client it admits, the edge's.
LIFECYCLE_TLS_NAME = "agentcube-e2b-lifecycle"
EDGE_TLS_NAME = "agentcube-e2b-edge"


class _Redacted:
    """Both identities hold a private key, which must never reach a log or a traceback."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(<redacted>)"


@dataclass(frozen=True, slots=True, repr=False)
class RouterIdentity(_Redacted):
    private_pem: bytes
    public_pem: bytes


@dataclass(frozen=True, slots=True, repr=False)
class TlsIdentity(_Redacted):
    # PEM CA certificate(s) the peer's certificate must chain to.
    ca_pem: bytes
    # PEM certificate of this side, and its PEM private key (PKCS#8).
    cert_pem: bytes
    key_pem: bytes


def _publish(directory: Path, name: str, content: bytes, mode: int) -> bool:
    """Create `directory/name` with `content` unless it exists; True if this call created it."""
    fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temp, directory / name)
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            Path(temp).unlink()


def _public_pem(private_pem: bytes) -> bytes:
    key = serialization.load_pem_private_key(private_pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the router identity private key is not an RSA key")
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_or_create_router_identity(directory: Path) -> RouterIdentity:
    """Load `directory/{private,public}.pem`, creating whatever is missing (0600 / 0644)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    private_path = directory / PRIVATE_FILE
    if not private_path.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,  # PKCS#1 "RSA PRIVATE KEY"
            serialization.NoEncryption(),
        )
        _publish(directory, PRIVATE_FILE, pem, 0o600)
    private_pem = private_path.read_bytes()
    public_pem = _public_pem(private_pem)
    public_path = directory / PUBLIC_FILE
    if not _publish(directory, PUBLIC_FILE, public_pem, 0o644) and (
        public_path.read_bytes() != public_pem
    ):
        # A stale public.pem next to a different private key would make picod reject every
        # token; the private key is the source of truth, so replace the public half.
        fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{PUBLIC_FILE}.")
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(public_pem)
        Path(temp).replace(public_path)
    return RouterIdentity(private_pem=private_pem, public_pem=public_pem)
