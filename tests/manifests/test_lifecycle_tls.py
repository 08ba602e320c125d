"""The lifecycle gRPC's mutual TLS: the Secret the lifecycle makes, and who its server admits.

The server is the production one (`new_server` + `bind` of extproc.lifecycle.server) with the
health service; the clients are the edge's `lifecycle_channel`. The edge's certificate from
the Secret gets in; no certificate, a certificate of another CA, our server's certificate
used as a client's, and a certificate of our CA with another name are all refused.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from kubernetes.client import ApiClient, Configuration

from extproc.core.identity import TlsIdentity
from extproc.edge.lifecycle_channel import is_ip_target, lifecycle_channel
from extproc.k8s import lifecycle_tls as t
from extproc.k8s.identity import SecretMissing, SecretUnavailable
from extproc.k8s.resources import Resources
from extproc.lifecycle.server import bind, new_server, start_probes
from support.kubeapi import FakeApi, served

NS = "agentcube-system"
NAME = t.DEFAULT_SECRET_NAME
SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest.fixture
async def api() -> AsyncIterator[FakeApi]:
    async with served(lambda fake: fake.install("secrets", writable=True)) as fake:
        yield fake


@pytest.fixture
def resources(api: FakeApi) -> Iterator[Resources]:
    configuration = Configuration(host=api.url)
    configuration.retries = 0
    client = ApiClient(configuration)
    made = Resources(client)
    yield made
    made.close()
    client.close()


def secret_data(api: FakeApi) -> dict[str, bytes]:
    secret = api.get("secrets", NS, NAME)
    assert secret is not None
    return {key: base64.b64decode(value) for key, value in secret["data"].items()}


def cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


# -- the Secret ---------------------------------------------------------------------------


async def test_the_secret_holds_a_ca_a_server_and_an_edge_certificate(
    api: FakeApi, resources: Resources
) -> None:
    server = await t.load_or_create_server_tls(resources, NS, NAME)
    data = secret_data(api)
    assert set(data) == {"ca.crt", "tls.crt", "tls.key", "client.crt", "client.key"}  # no ca.key
    secret = api.get("secrets", NS, NAME)
    assert secret is not None
    assert secret["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "agentcube-e2b"}
    assert (server.ca_pem, server.cert_pem, server.key_pem) == (
        data["ca.crt"], data["tls.crt"], data["tls.key"]
    )  # fmt: skip
    leaf = cert(data["tls.crt"])
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {
        "agentcube-e2b-lifecycle", f"agentcube-e2b-lifecycle.{NS}",
        f"agentcube-e2b-lifecycle.{NS}.svc", f"agentcube-e2b-lifecycle.{NS}.svc.cluster.local",
        "localhost",
    }  # fmt: skip
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    client = cert(data["client.crt"])
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == t.EDGE_NAME
    usage = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    ca = cert(data["ca.crt"])
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert datetime.timedelta(days=364) < lifetime < datetime.timedelta(days=366)
    for pem in (data["tls.crt"], data["client.crt"]):
        cert(pem).verify_directly_issued_by(ca)


async def test_made_once_read_after_and_racing_replicas_converge(
    api: FakeApi, resources: Resources
) -> None:
    made = await asyncio.gather(
        *(t.load_or_create_server_tls(resources, NS, NAME) for _ in range(3))
    )
    assert len({identity.cert_pem for identity in made}) == 1
    again = await t.load_or_create_server_tls(resources, NS, NAME)
    assert again == made[0]
    edge = await t.load_client_tls(resources, NS, NAME)
    assert edge.ca_pem == again.ca_pem
    assert edge.cert_pem == secret_data(api)["client.crt"]


async def test_the_edge_never_creates_it_and_says_who_does(
    api: FakeApi, resources: Resources
) -> None:
    with pytest.raises(SecretMissing) as raised:
        await t.load_client_tls(resources, NS, NAME)
    assert f"Secret {NS}/{NAME} not found" in str(raised.value)
    assert "the lifecycle service creates it" in str(raised.value)
    assert api.writes("secrets") == []


def _replace(api: FakeApi, **changes: bytes) -> None:
    secret = api.get("secrets", NS, NAME)
    assert secret is not None
    for key, value in changes.items():
        secret["data"][key.replace("_", ".")] = base64.b64encode(value).decode()
    api.put("secrets", secret)


async def test_a_tampered_secret_is_refused(api: FakeApi, resources: Resources) -> None:
    await t.load_or_create_server_tls(resources, NS, NAME)
    other = t.new_secret_data(NS)
    _replace(api, client_key=other["client.key"])
    with pytest.raises(SecretUnavailable, match="private key does not match"):
        await t.load_client_tls(resources, NS, NAME)
    _replace(api, client_key=secret_data(api)["client.key"], ca_crt=other["ca.crt"])
    with pytest.raises(SecretUnavailable, match="not signed by the CA"):
        await t.load_or_create_server_tls(resources, NS, NAME)
    _replace(api, tls_crt=b"junk")
    with pytest.raises(SecretUnavailable, match="not valid PEM"):
        await t.load_or_create_server_tls(resources, NS, NAME)


def _leaf_valid_until(authority: t.Authority, ends: datetime.datetime) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .issuer_name(authority.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(ends - datetime.timedelta(days=365))
        .not_valid_after(ends)
        .sign(authority.key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return leaf.public_bytes(serialization.Encoding.PEM), key_pem


def test_an_expired_certificate_stops_start_up_with_the_way_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    authority = t.new_authority()
    ca_pem = authority.certificate.public_bytes(serialization.Encoding.PEM)
    now = datetime.datetime.now(datetime.UTC)
    cert_pem, key_pem = _leaf_valid_until(authority, now - datetime.timedelta(days=1))
    with pytest.raises(SecretUnavailable) as raised:
        t.checked(ca_pem, cert_pem, key_pem, "Secret ns/name")
    assert "expired" in str(raised.value)
    assert str(raised.value).startswith("Secret ns/name: the lifecycle TLS certificate expired")
    assert "delete the lifecycle's TLS Secret and restart the lifecycle service" in str(
        raised.value
    )
    # near its end: still used, with a warning saying how to rotate
    cert_pem, key_pem = _leaf_valid_until(authority, now + datetime.timedelta(days=3))
    t.checked(ca_pem, cert_pem, key_pem, "Secret ns/name")
    assert "expires at" in caplog.text
    assert "delete the lifecycle's TLS Secret" in caplog.text


# -- the handshake ------------------------------------------------------------------------


def pair(authority: t.Authority, name: str, *, server: bool) -> TlsIdentity:
    ca_pem = authority.certificate.public_bytes(serialization.Encoding.PEM)
    names = [*t.server_names(NS), "127.0.0.1"] if server else [name]
    cert_pem, key_pem = t.issue(authority, name, names, server=server)
    return TlsIdentity(ca_pem=ca_pem, cert_pem=cert_pem, key_pem=key_pem)


@pytest.fixture
async def lifecycle(api: FakeApi, resources: Resources) -> AsyncIterator[dict[str, Any]]:
    """A server with the Secret's certificate, health SERVING; yields its address and the
    edge's client TlsIdentity as the edge would read it."""
    server_tls = await t.load_or_create_server_tls(resources, NS, NAME)
    edge_tls = await t.load_client_tls(resources, NS, NAME)
    server = new_server(server_tls, None)
    servicer = health.aio.HealthServicer()
    await servicer.set("", SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "test.Stream", {"Count": grpc.unary_stream_rpc_method_handler(_count)})])  # fmt: skip
    port = bind(server, "127.0.0.1:0", server_tls)
    await server.start()
    try:
        yield {"port": port, "edge": edge_tls, "server": server_tls, "health": servicer}
    finally:
        await server.stop(0)


async def _count(request: bytes, context: Any) -> AsyncIterator[bytes]:
    for number in range(3):
        yield bytes([number])


async def check(target: str, tls: TlsIdentity | None, **channel: Any) -> Any:
    """The health status through a channel, or the gRPC status code it failed with."""
    if channel:
        made = grpc.aio.secure_channel(target, **channel)
    else:
        made = lifecycle_channel(target, None, tls)
    async with made:
        try:
            reply = await health_pb2_grpc.HealthStub(made).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        except grpc.aio.AioRpcError as error:
            return error.code()
        return reply.status


async def test_the_edge_certificate_gets_in(lifecycle: dict[str, Any]) -> None:
    port, edge = lifecycle["port"], lifecycle["edge"]
    assert await check(f"127.0.0.1:{port}", edge) == SERVING  # an IP: name override
    assert await check(f"localhost:{port}", edge) == SERVING  # a name in the certificate
    async with lifecycle_channel(f"127.0.0.1:{port}", None, edge) as channel:
        count = channel.unary_stream("/test.Stream/Count")
        assert [item async for item in count(b"")] == [b"\x00", b"\x01", b"\x02"]
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        assert (await watch.read()).status == SERVING
        watch.cancel()


async def test_plaintext_and_no_certificate_are_refused_at_the_handshake(
    lifecycle: dict[str, Any],
) -> None:
    target = f"127.0.0.1:{lifecycle['port']}"
    assert await check(target, None) == grpc.StatusCode.UNAVAILABLE
    no_cert = grpc.ssl_channel_credentials(root_certificates=lifecycle["edge"].ca_pem)
    overridden = [("grpc.ssl_target_name_override", t.LIFECYCLE_SERVICE)]
    assert await check(target, None, credentials=no_cert, options=overridden) == (
        grpc.StatusCode.UNAVAILABLE
    )


async def test_a_certificate_of_another_ca_is_refused(lifecycle: dict[str, Any]) -> None:
    foreign = pair(t.new_authority(), t.EDGE_NAME, server=False)  # the right name, wrong CA
    # trusting our server (so the refusal is the server's, not the client's)
    mixed = TlsIdentity(ca_pem=lifecycle["edge"].ca_pem, cert_pem=foreign.cert_pem,
                        key_pem=foreign.key_pem)  # fmt: skip
    assert await check(f"127.0.0.1:{lifecycle['port']}", mixed) == grpc.StatusCode.UNAVAILABLE


async def test_the_servers_own_certificate_is_no_client_certificate(
    lifecycle: dict[str, Any],
) -> None:
    server = lifecycle["server"]  # of our CA, but for serverAuth only
    assert await check(f"127.0.0.1:{lifecycle['port']}", server) == grpc.StatusCode.UNAVAILABLE


async def test_another_name_from_the_same_ca_is_refused_per_call() -> None:
    authority = t.new_authority()
    server_tls = pair(authority, t.LIFECYCLE_SERVICE, server=True)
    intruder = pair(authority, "someone-else", server=False)
    edge = pair(authority, t.EDGE_NAME, server=False)
    server = new_server(server_tls, None)
    servicer = health.aio.HealthServicer()
    await servicer.set("", SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = bind(server, "127.0.0.1:0", server_tls)
    await server.start()
    try:
        assert await check(f"127.0.0.1:{port}", intruder) == grpc.StatusCode.UNAUTHENTICATED
        assert await check(f"127.0.0.1:{port}", edge) == SERVING
    finally:
        await server.stop(0)


def test_is_edge_reads_the_verified_names() -> None:
    assert t.is_edge({"x509_common_name": [t.EDGE_NAME.encode()]})
    assert t.is_edge({"x509_subject_alternative_name": [b"x", t.EDGE_NAME.encode()]})
    assert not t.is_edge({"x509_common_name": [b"agentcube-e2b-edge2"]})
    assert not t.is_edge({})


@pytest.mark.parametrize(
    ("target", "ip"),
    [("127.0.0.1:9002", True), ("[::1]:9002", True), ("ipv4:10.0.0.1:9002", True),
     ("agentcube-e2b-lifecycle:9002", False), ("localhost:9002", False),
     ("unix:/run/l.sock", False)],
)  # fmt: skip
def test_ip_targets(target: str, ip: bool) -> None:
    assert is_ip_target(target) is ip


async def test_probe_port_serves_health_in_plaintext_and_nothing_else(
    lifecycle: dict[str, Any],
) -> None:
    probes = await start_probes(lifecycle["health"], "127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{probes.port}") as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
            assert reply.status == SERVING
            count = channel.unary_stream("/test.Stream/Count")
            with pytest.raises(grpc.aio.AioRpcError) as error:
                _ = [item async for item in count(b"")]
            assert error.value.code() is grpc.StatusCode.UNIMPLEMENTED
    finally:
        await probes.server.stop(0)
