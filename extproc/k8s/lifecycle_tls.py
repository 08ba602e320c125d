"""Mutual TLS for the lifecycle gRPC in Kubernetes mode: one Secret, a private CA, two certs.

In a cluster the lifecycle service listens on the pod network, and only the edge may create
and delete sandboxes. A NetworkPolicy says who can open a connection, but only where the CNI
enforces it; mutual TLS makes the service itself refuse any caller without the edge's
certificate, at the handshake. (Locally nothing changes: a 0600 unix socket plus the caller
token, extproc.core.caller_token.)

The lifecycle service creates Secret `e2b-lifecycle-tls` in its own namespace at start if it
is absent (create-or-read, as identity.py: racing replicas converge on the first writer):

    ca.crt                  a self-made CA, EC P-256, valid one year
    tls.crt, tls.key        the lifecycle's server certificate: SANs the Service's names in
                            that namespace (`agentcube-e2b-lifecycle`, `.<ns>`, `.<ns>.svc`,
                            `.<ns>.svc.cluster.local`), `localhost` and 127.0.0.1
    client.crt, client.key  the edge's client certificate, CN and SAN `agentcube-e2b-edge`

Each leaf carries one extended key usage (serverAuth or clientAuth), so the server's
certificate cannot be presented as a client's. The CA's private key is dropped once both are
signed: nothing needs it later (rotation makes a new CA), and kept in the Secret it would let
anyone who can read the Secret (the edge) mint certificates. Rotation: delete the Secret and
restart the lifecycle service, then the edges (docs/kubernetes.md).
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from extproc.core.identity import EDGE_TLS_NAME, LIFECYCLE_TLS_NAME, TlsIdentity
from extproc.k8s.identity import SecretUnavailable, read_or_create_secret, read_secret, secret_data
from extproc.k8s.listwatch import KubeObject
from extproc.k8s.resources import Resources

log = logging.getLogger(__name__)

DEFAULT_SECRET_NAME = "e2b-lifecycle-tls"  # noqa: S105 (a Secret's name)
# The lifecycle Service's name (k8s/base/services.yaml): the server certificate's names.
LIFECYCLE_SERVICE = LIFECYCLE_TLS_NAME
# The one client identity the lifecycle service admits (CN and DNS SAN of client.crt).
EDGE_NAME = EDGE_TLS_NAME
CA_CERT = "ca.crt"
SERVER_CERT, SERVER_KEY = "tls.crt", "tls.key"
CLIENT_CERT, CLIENT_KEY = "client.crt", "client.key"
LABELS = {"app.kubernetes.io/managed-by": "agentcube-e2b"}
VALIDITY = datetime.timedelta(days=365)
# Start-up warns when the certificates end within this (handshakes fail after).
RENEW_WARNING = datetime.timedelta(days=30)
# not-before this far back, for clocks a little behind ours
_CLOCK_SKEW = datetime.timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class Authority:
    """A CA that can sign: only ever held in memory while the Secret is being made."""

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate


def server_names(namespace: str, service: str = LIFECYCLE_SERVICE) -> list[str]:
    """The DNS names a client may dial the lifecycle Service by, in `namespace`."""
    return [service, f"{service}.{namespace}", f"{service}.{namespace}.svc",
            f"{service}.{namespace}.svc.cluster.local", "localhost"]  # fmt: skip


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _key_usage(*, authority: bool) -> x509.KeyUsage:
    """A CA signs certificates; a leaf (ECDSA) signs handshakes, nothing else."""
    return x509.KeyUsage(
        digital_signature=not authority,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=authority,
        crl_sign=authority,
        encipher_only=False,
        decipher_only=False,
    )


def new_authority(common_name: str = "agentcube-e2b lifecycle CA") -> Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(authority=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return Authority(key, certificate)


def issue(
    authority: Authority, common_name: str, names: list[str], *, server: bool
) -> tuple[bytes, bytes]:
    """(certificate PEM, PKCS#8 key PEM) for `common_name`, signed by `authority`. `names`:
    DNS names and IP addresses for the SAN. `server`: serverAuth, else clientAuth only."""
    key = ec.generate_private_key(ec.SECP256R1())
    alternative: list[x509.GeneralName] = []
    for name in names:
        try:
            alternative.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alternative.append(x509.DNSName(name))
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(authority.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(authority.certificate.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(authority=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(alternative), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.key.public_key()), False
        )
        .sign(authority.key, hashes.SHA256())
    )
    return _pem(certificate), _key_pem(key)


def new_secret_data(namespace: str) -> dict[str, bytes]:
    """Everything the Secret holds, freshly made for a lifecycle Service in `namespace`."""
    authority = new_authority()
    server_cert, server_key = issue(
        authority, LIFECYCLE_SERVICE, [*server_names(namespace), "127.0.0.1"], server=True
    )
    client_cert, client_key = issue(authority, EDGE_NAME, [EDGE_NAME], server=False)
    return {
        CA_CERT: _pem(authority.certificate),
        SERVER_CERT: server_cert,
        SERVER_KEY: server_key,
        CLIENT_CERT: client_cert,
        CLIENT_KEY: client_key,
    }


_ROTATION = (
    "rotate: delete the lifecycle's TLS Secret and restart the lifecycle service, then the "
    "edge (docs/kubernetes.md, 'Rotating the lifecycle's TLS certificates')"
)


def checked(ca_pem: bytes, cert_pem: bytes, key_pem: bytes, where: str) -> TlsIdentity:
    """A TlsIdentity once the certificate parses, chains to the CA, matches its key and is
    still valid; SecretUnavailable naming `where` (a Secret or a directory) otherwise."""
    try:
        certificate = x509.load_pem_x509_certificate(cert_pem)
        authorities = x509.load_pem_x509_certificates(ca_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as error:
        raise SecretUnavailable(f"{where}: a certificate or key is not valid PEM") from error
    if key.public_key() != certificate.public_key():
        raise SecretUnavailable(f"{where}: the private key does not match the certificate")
    if not any(_signed_by(certificate, authority) for authority in authorities):
        raise SecretUnavailable(f"{where}: the certificate is not signed by the CA beside it")
    ends = certificate.not_valid_after_utc
    now = datetime.datetime.now(datetime.UTC)
    if ends <= now:
        raise SecretUnavailable(
            f"{where}: the lifecycle TLS certificate expired at {ends:%Y-%m-%d %H:%M} UTC; "
            + _ROTATION
        )
    if ends - now < RENEW_WARNING:
        log.warning(
            "%s: the lifecycle TLS certificate expires at %s UTC; %s",
            where, f"{ends:%Y-%m-%d %H:%M}", _ROTATION,
        )  # fmt: skip
    return TlsIdentity(ca_pem=ca_pem, cert_pem=cert_pem, key_pem=key_pem)


def _signed_by(certificate: x509.Certificate, authority: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(authority)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def is_edge(auth_context: Mapping[str, Iterable[bytes]]) -> bool:
    """True when a verified TLS peer (grpc's `auth_context()`) is the edge: its certificate's
    CN or a DNS SAN is EDGE_NAME. The handshake already proved the certificate chains to our
    CA and is for clientAuth; this refuses any other name that CA might carry."""
    wanted = EDGE_NAME.encode()
    names = [*auth_context.get("x509_common_name", ()),
             *auth_context.get("x509_subject_alternative_name", ())]  # fmt: skip
    return wanted in names


def _identity(secret: KubeObject, where: str, cert: str, key: str) -> TlsIdentity:
    return checked(
        secret_data(secret, CA_CERT, where),
        secret_data(secret, cert, where),
        secret_data(secret, key, where),
        f"Secret {where}",
    )


async def load_or_create_server_tls(api: Resources, namespace: str, name: str) -> TlsIdentity:
    """The lifecycle's side: the server certificate from Secret `namespace/name`, the Secret
    created first (for a Service in `namespace`) if absent."""
    secret = await read_or_create_secret(
        api, namespace, name, LABELS, lambda: new_secret_data(namespace)
    )
    return _identity(secret, f"{namespace}/{name}", SERVER_CERT, SERVER_KEY)


async def load_client_tls(api: Resources, namespace: str, name: str) -> TlsIdentity:
    """The edge's side: its client certificate from Secret `namespace/name`, never created
    here; SecretMissing saying who makes it when absent."""
    secret = await read_secret(
        api, namespace, name,
        missing="the lifecycle service creates it when it starts (its --namespace and "
        "--lifecycle-tls-secret); start it first, or point the edge at them with --namespace "
        "and --lifecycle-tls-secret",
    )  # fmt: skip
    return _identity(secret, f"{namespace}/{name}", CLIENT_CERT, CLIENT_KEY)
