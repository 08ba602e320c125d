"""The router identity and the token seed, read (or made) through the API against a fake one.

The identity is AgentCube's: missing means "install AgentCube, point at its namespace, or
ask for it to be created", never a silent second key pair; any unusable pair is refused at
start-up rather than discovered as every picod rejecting every JWT.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from kubernetes.client import ApiClient, Configuration

from extproc.k8s.identity import (
    SecretMissing,
    SecretUnavailable,
    load_identity,
    load_or_create_seed,
)
from extproc.k8s.resources import Resources
from support.kubeapi import FakeApi, served

AGENTCUBE = "agentcube"
NAME = "picod-router-identity"


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


def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def private_pem(key: Any, form: serialization.PrivateFormat) -> bytes:
    return bytes(key.private_bytes(serialization.Encoding.PEM, form, serialization.NoEncryption()))


def public_pem(key: Any) -> bytes:
    return bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def put_identity(api: FakeApi, data: dict[str, bytes], namespace: str = AGENTCUBE) -> None:
    api.put("secrets", {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": NAME, "namespace": namespace,
                     "labels": {"app": "agentcube", "component": "router"}},
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    })  # fmt: skip


def stored(api: FakeApi, namespace: str, name: str) -> dict[str, bytes]:
    secret = api.get("secrets", namespace, name)
    assert secret is not None
    return {k: base64.b64decode(v) for k, v in secret["data"].items()}


async def test_missing_identity_says_where_and_the_two_ways_out(
    api: FakeApi, resources: Resources
) -> None:
    with pytest.raises(SecretMissing) as raised:
        await load_identity(resources, AGENTCUBE, NAME, create=False)
    message = str(raised.value)
    assert "\n" not in message
    assert f"Secret {AGENTCUBE}/{NAME} not found" in message
    assert "AgentCube's router creates it" in message
    assert "--identity-namespace" in message
    assert "--create-identity" in message
    assert api.writes("secrets") == []  # nothing made behind AgentCube's back


async def test_an_identity_in_another_namespace_is_not_found(
    api: FakeApi, resources: Resources
) -> None:
    key = rsa_key()
    put_identity(api, {"private.pem": private_pem(key, serialization.PrivateFormat.PKCS8),
                       "public.pem": public_pem(key)}, namespace="agentcube-system")  # fmt: skip
    with pytest.raises(SecretMissing):
        await load_identity(resources, AGENTCUBE, NAME, create=False)


@pytest.mark.parametrize(
    "form", [serialization.PrivateFormat.TraditionalOpenSSL, serialization.PrivateFormat.PKCS8]
)
async def test_pkcs1_and_pkcs8_private_keys_are_accepted_as_stored(
    api: FakeApi, resources: Resources, form: serialization.PrivateFormat
) -> None:
    key = rsa_key()
    private, public = private_pem(key, form), public_pem(key)
    put_identity(api, {"private.pem": private, "public.pem": public})
    identity = await load_identity(resources, AGENTCUBE, NAME, create=False)
    # exactly AgentCube's bytes: public.pem is what its warm pods were given
    assert (identity.private_pem, identity.public_pem) == (private, public)
    assert "PRIVATE KEY" not in repr(identity)


def _mismatched(a: Any, b: Any) -> dict[str, bytes]:
    return {"private.pem": private_pem(a, serialization.PrivateFormat.PKCS8),
            "public.pem": public_pem(b)}  # fmt: skip


def _no_private(a: Any, b: Any) -> dict[str, bytes]:
    return {"public.pem": public_pem(a)}


def _garbage(a: Any, b: Any) -> dict[str, bytes]:
    return {"private.pem": b"-----BEGIN RSA PRIVATE KEY-----\nxx\n", "public.pem": public_pem(a)}


def _encrypted(a: Any, b: Any) -> dict[str, bytes]:
    locked = a.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.BestAvailableEncryption(b"pw"))  # fmt: skip
    return {"private.pem": locked, "public.pem": public_pem(a)}


def _bad_public(a: Any, b: Any) -> dict[str, bytes]:
    return {"private.pem": private_pem(a, serialization.PrivateFormat.PKCS8),
            "public.pem": b"not a key"}  # fmt: skip


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (_mismatched, "not the public half"),
        (_no_private, "no data key 'private.pem'"),
        (_garbage, "not an unencrypted PEM private key"),
        (_encrypted, "not an unencrypted PEM private key"),
        (_bad_public, "public.pem is not a PEM public key"),
    ],
)
async def test_unusable_pairs_are_refused(
    api: FakeApi, resources: Resources, data: Any, words: str
) -> None:
    put_identity(api, data(rsa_key(), rsa_key()))
    with pytest.raises(SecretUnavailable) as raised:
        await load_identity(resources, AGENTCUBE, NAME, create=False)
    assert words in str(raised.value)
    assert f"{AGENTCUBE}/{NAME}" in str(raised.value)


async def test_non_rsa_and_short_keys_are_refused(api: FakeApi, resources: Resources) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    put_identity(api, {"private.pem": private_pem(ec_key, serialization.PrivateFormat.PKCS8),
                       "public.pem": public_pem(ec_key)})  # fmt: skip
    with pytest.raises(SecretUnavailable, match="must be an RSA key pair"):
        await load_identity(resources, AGENTCUBE, NAME, create=False)
    short = rsa_key(1024)
    put_identity(api, {"private.pem": private_pem(short, serialization.PrivateFormat.PKCS8),
                       "public.pem": public_pem(short)})  # fmt: skip
    with pytest.raises(SecretUnavailable, match="1024-bit RSA key is too short"):
        await load_identity(resources, AGENTCUBE, NAME, create=False)


async def test_forbidden_read_names_the_grant(api: FakeApi, resources: Resources) -> None:
    api.fail("GET", "secrets", 403)
    with pytest.raises(SecretUnavailable) as raised:
        await load_identity(resources, AGENTCUBE, NAME, create=False)
    assert not isinstance(raised.value, SecretMissing)  # nothing to wait for
    message = str(raised.value)
    assert "forbidden" in message
    assert f"`get` on secrets named {NAME} in namespace {AGENTCUBE}" in message


async def test_create_makes_agentcubes_kind_of_secret_once(
    api: FakeApi, resources: Resources
) -> None:
    first = await load_identity(resources, AGENTCUBE, NAME, create=True)
    again = await load_identity(resources, AGENTCUBE, NAME, create=True)
    assert again == first
    assert [entry.method for entry in api.writes("secrets")] == ["POST"]
    secret = api.get("secrets", AGENTCUBE, NAME)
    assert secret is not None
    assert secret["metadata"]["labels"] == {
        "app": "agentcube", "component": "router", "app.kubernetes.io/managed-by": "agentcube-e2b"
    }  # fmt: skip
    data = stored(api, AGENTCUBE, NAME)
    assert data["private.pem"].startswith(b"-----BEGIN RSA PRIVATE KEY-----")  # PKCS#1
    assert data["public.pem"].startswith(b"-----BEGIN PUBLIC KEY-----")  # PKIX
    assert (first.private_pem, first.public_pem) == (data["private.pem"], data["public.pem"])


async def test_create_never_overwrites_an_existing_identity(
    api: FakeApi, resources: Resources
) -> None:
    key = rsa_key()
    theirs = {"private.pem": private_pem(key, serialization.PrivateFormat.TraditionalOpenSSL),
              "public.pem": public_pem(key)}  # fmt: skip
    put_identity(api, theirs)
    identity = await load_identity(resources, AGENTCUBE, NAME, create=True)
    assert identity.private_pem == theirs["private.pem"]
    assert api.writes("secrets") == []


async def test_a_lost_create_race_reads_the_winner(api: FakeApi, resources: Resources) -> None:
    """Another writer (AgentCube's router, a replica) created it between our read and our
    create: its key is used, ours dropped."""
    key = rsa_key()
    put_identity(api, {"private.pem": private_pem(key, serialization.PrivateFormat.PKCS8),
                       "public.pem": public_pem(key)})  # fmt: skip
    api.fail("GET", "secrets", 404)  # our first read: not there yet
    api.fail("POST", "secrets", 409)  # our create: the other writer was first
    identity = await load_identity(resources, AGENTCUBE, NAME, create=True)
    assert identity.public_pem == public_pem(key)


async def test_concurrent_creators_converge(api: FakeApi, resources: Resources) -> None:
    identities = await asyncio.gather(
        *(load_identity(resources, AGENTCUBE, NAME, create=True) for _ in range(3))
    )
    assert len({identity.private_pem for identity in identities}) == 1


async def test_forbidden_create_names_the_grant(api: FakeApi, resources: Resources) -> None:
    api.fail("POST", "secrets", 403)
    with pytest.raises(SecretUnavailable, match=f"`create` on secrets in namespace {AGENTCUBE}"):
        await load_identity(resources, AGENTCUBE, NAME, create=True)


async def test_seed_is_made_once_and_checked(api: FakeApi, resources: Resources) -> None:
    seed = await load_or_create_seed(resources, "agentcube-system", "e2b-envd-token-seed")
    assert len(seed) == 32
    assert await load_or_create_seed(resources, "agentcube-system", "e2b-envd-token-seed") == seed
    secret = api.get("secrets", "agentcube-system", "e2b-envd-token-seed")
    assert secret is not None
    assert secret["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "agentcube-e2b"}
    api.put("secrets", {
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "bad-seed", "namespace": "agentcube-system"},
        "data": {"seed": base64.b64encode(b"not hex").decode()},
    })  # fmt: skip
    with pytest.raises(SecretUnavailable, match="'seed' is not hex"):
        await load_or_create_seed(resources, "agentcube-system", "bad-seed")
