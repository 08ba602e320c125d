"""The error tables, the key model and store, the keys CLI, identity files, health, metrics."""

from __future__ import annotations

import asyncio
import json
import stat
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from extproc.cli import main
from extproc.core import errors
from extproc.core.api_keys import (
    KeyStatus,
    hash_api_key,
    is_api_key,
    new_api_key,
    parse_key_documents,
)
from extproc.core.identity import TlsIdentity, load_or_create_router_identity
from extproc.edge.keyfiles import read_key_index
from extproc.edge.keystore import KeyStore
from extproc.edge.rest_wire import DEFAULT_STATUS, FROM_GRPC, HTTP_STATUS, error_answer, from_grpc
from extproc.edge.server import Edge
from extproc.edge.settings import KeyStoreSettings

from .conftest import KEY_A


@pytest.mark.parametrize(("kind", "status"), sorted(HTTP_STATUS.items(), key=lambda kv: kv[1]))
def test_every_domain_error_row(kind: type[errors.DomainError], status: int) -> None:
    answer = error_answer(kind("why"))
    assert answer.status == status
    assert json.loads(answer.body) == {"code": status, "message": "why"}
    assert ("content-type", "application/json") in answer.headers


def test_unmapped_errors_are_500_without_leaking() -> None:
    answer = error_answer(RuntimeError("secret detail"))
    assert answer.status == DEFAULT_STATUS
    assert json.loads(answer.body) == {"code": 500, "message": "internal error"}
    assert ("should-retry", "false") in error_answer(RuntimeError(), retryable=False).headers


class _RpcError(grpc.aio.AioRpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="detail")


@pytest.mark.parametrize(("code", "kind"), list(FROM_GRPC.items()))
def test_every_grpc_row(code: grpc.StatusCode, kind: type[errors.DomainError]) -> None:
    assert type(from_grpc(_RpcError(code))) is kind


@pytest.mark.parametrize(
    "code", [grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS]
)
def test_grpc_default_row(code: grpc.StatusCode) -> None:
    assert error_answer(from_grpc(_RpcError(code))).status == 500


def test_key_format_and_hash() -> None:
    key = new_api_key()
    assert is_api_key(key) and len(key) == 44 and key != new_api_key()
    assert not is_api_key("e2b_" + "A" * 40) and not is_api_key("e2b_123")
    assert hash_api_key("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


@pytest.mark.parametrize(
    ("secret", "config", "fragment"),
    [
        ({"stringData": {"x" * 64: "valid"}}, {}, "sha256"),
        ({"stringData": {"a" * 64: "maybe"}}, {}, "expected valid"),
        ({"stringData": ["a"]}, {}, "object of strings"),
        ({"data": {"a" * 64: "!!"}}, {}, "base64"),
        ({}, {"data": {"defaultNamespace": 3}}, "object of strings"),
    ],
)
def test_invalid_key_documents(secret: dict, config: dict, fragment: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=fragment):
        parse_key_documents(secret, config)


def test_secret_data_is_base64_like_kubernetes() -> None:
    import base64

    index = parse_key_documents({"data": {"a" * 64: base64.b64encode(b"revoked").decode()}}, None)
    assert index.entries["a" * 64].status is KeyStatus.REVOKED
    assert index.entries["a" * 64].namespace == "default"


async def test_keystore_reloads_within_a_second_and_keeps_last_good(tmp_path: Path) -> None:
    tmp_path = tmp_path / "keys"
    store = KeyStore(KeyStoreSettings(directory=tmp_path, poll_interval_s=0.25))
    task = asyncio.create_task(store.watch())
    try:
        await store.loaded.wait()
        assert len(store.index) == 0
        # Write through the CLI into the watched directory (<state>/keys).
        state = tmp_path.parent
        assert main(["keys", "create", "--state-dir", str(state), "--namespace", "ns1"]) == 0
        started = time.monotonic()
        first = store.index
        while store.index is first:
            await asyncio.sleep(0.05)
        assert time.monotonic() - started < 1.0
        assert [e.namespace for e in store.index.entries.values()] == ["ns1"]
        good = store.index
        (tmp_path / "e2b-api-keys.json").write_text("{broken")
        store.reload_if_changed()  # the same check the poll runs, awaited directly
        assert store.index is good
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_keys_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = str(tmp_path)
    assert (
        main(["keys", "create", "--state-dir", state, "--namespace", "team-x", "--name", "ci"]) == 0
    )
    key = capsys.readouterr().out.strip()
    assert is_api_key(key)
    assert main(["keys", "create", "--state-dir", state]) == 0
    other = capsys.readouterr().out.strip()
    stored = (tmp_path / "keys" / "e2b-api-keys.json").read_text()
    assert key not in stored and hash_api_key(key) in stored
    assert main(["keys", "list", "--state-dir", state]) == 0
    listing = capsys.readouterr().out
    assert key not in listing and hash_api_key(key)[:12] in listing and "team-x" in listing
    assert main(["keys", "revoke", "--state-dir", state, "zz"]) == 1
    assert main(["keys", "revoke", "--state-dir", state, "e2b_" + "0" * 40]) == 1
    assert main(["keys", "revoke", "--state-dir", state, hash_api_key(key)[:8]]) == 0
    assert main(["keys", "revoke", "--state-dir", state, other]) == 0
    index = read_key_index(tmp_path / "keys")
    assert {e.status for e in index.entries.values()} == {KeyStatus.REVOKED}
    assert index.entries[hash_api_key(key)].namespace == "team-x"
    assert main(["keys", "create", "--state-dir", state, "--namespace", "Bad_NS"]) == 1


def test_keys_cli_ambiguous_prefix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    hashes = {"abcdef" + "0" * 58: "valid", "abcdef" + "1" * 58: "valid"}
    (keys / "e2b-api-keys.json").write_text(json.dumps({"stringData": hashes}))
    assert main(["keys", "revoke", "--state-dir", str(tmp_path), "abcdef"]) == 1
    assert "ambiguous" in capsys.readouterr().err


def test_identity_files(tmp_path: Path) -> None:
    identity = load_or_create_router_identity(tmp_path / "id")
    assert identity.private_pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert identity.public_pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    assert stat.S_IMODE((tmp_path / "id" / "private.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "id" / "public.pem").stat().st_mode) == 0o644
    (tmp_path / "id" / "public.pem").unlink()
    again = load_or_create_router_identity(tmp_path / "id")
    assert again == identity
    # A private key never reaches a log line or a traceback through repr.
    assert repr(identity) == "RouterIdentity(<redacted>)"
    tls = TlsIdentity(ca_pem=b"ca", cert_pem=b"cert", key_pem=identity.private_pem)
    assert repr(tls) == str(tls) == "TlsIdentity(<redacted>)"
    assert [p.name for p in (tmp_path / "id").iterdir() if p.name.startswith(".")] == []


async def test_health_serving_and_metrics(edge: Edge, channel: grpc.aio.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", "envoy.service.auth.v3.Authorization"):
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service))
        while reply.status != health_pb2.HealthCheckResponse.SERVING:
            await asyncio.sleep(0.01)
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service))
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.metrics_port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    text = (await reader.read()).decode()
    writer.close()
    await writer.wait_closed()
    assert text.startswith("HTTP/1.1 200")
    assert "agentcube_e2b_edge_directory_sandboxes 2.0" in text
    assert "agentcube_e2b_edge_api_keys 4.0" in text
    assert KEY_A not in text
