"""`agentcube-e2b keys create|list|revoke --kubernetes` against the fake API: the exact
requests, their order, and what the edge's informers then decide."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest

from extproc.cli import main
from extproc.core.api_keys import hash_api_key
from extproc.edge.server import Edge
from extproc.k8s.informing import Informer
from support.kubeapi import FakeApi

from .conftest import KEY_A, NS, WAIT_S, check_request
from .test_cluster_edge import check, denial, tenant

MERGE = "application/merge-patch+json"
# kubernetes 37's generated create methods send no Content-Type (they ignore `_content_type`);
# the API server then decodes JSON, its first supported media type.
NO_TYPE = ""


async def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    # The client blocks; the fake API is served by this event loop.
    code = await asyncio.to_thread(main, ["keys", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def stored_status(informer: Informer, key_hash: str) -> str:
    """The status the informer's cached Secret gives `key_hash` (the API server stores
    `stringData` base64-encoded in `data`)."""
    for secret in informer.store.values():
        raw = (secret.get("data") or {}).get(key_hash)
        if isinstance(raw, str):
            return base64.b64decode(raw).decode()
    return ""


def writes(api: FakeApi) -> list[tuple[str, str, str | None, str, object]]:
    return [(w.method, w.plural, w.name, w.content_type, w.body) for w in api.writes()]


async def test_create_on_an_empty_cluster_creates_both_documents_config_first(
    api: FakeApi, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = await cli(
        capsys, "create", "--kubernetes", "--kubeconfig", str(kubeconfig),
        "--namespace", "team-a", "--name", "ci",
    )  # fmt: skip
    assert code == 0, err
    key = out.strip()
    key_hash = hash_api_key(key)
    assert "namespace team-a" in err
    labels = {"app.kubernetes.io/managed-by": "agentcube-e2b"}
    entries = {key_hash: "team-a", f"name.{key_hash}": "ci"}
    assert writes(api) == [
        ("PATCH", "configmaps", "e2b-api-key-config", MERGE, {"data": entries}),
        ("POST", "configmaps", None, NO_TYPE, {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "e2b-api-key-config", "namespace": NS, "labels": labels},
            "data": {"defaultNamespace": "default", **entries},
        }),
        ("PATCH", "secrets", "e2b-api-keys", MERGE, {"stringData": {key_hash: "valid"}}),
        ("POST", "secrets", None, NO_TYPE, {
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": "e2b-api-keys", "namespace": NS, "labels": labels},
            "stringData": {key_hash: "valid"},
        }),
    ]  # fmt: skip


async def test_create_list_revoke_patch_only_their_key_and_the_edge_follows(
    edge: Edge, api: FakeApi, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = ("--kubernetes", "--kubeconfig", str(kubeconfig))
    code, out, err = await cli(capsys, "create", *flags, "--namespace", "team-c")
    assert code == 0, err
    key = out.strip()
    key_hash = hash_api_key(key)
    code, out, err = await cli(capsys, "create", *flags, "--name", "no-tenant")
    assert code == 0, err
    other_hash = hash_api_key(out.strip())
    assert "namespace default" in err
    assert writes(api) == [
        ("PATCH", "configmaps", "e2b-api-key-config", MERGE, {"data": {key_hash: "team-c"}}),
        ("PATCH", "secrets", "e2b-api-keys", MERGE, {"stringData": {key_hash: "valid"}}),
        ("PATCH", "configmaps", "e2b-api-key-config", MERGE,
         {"data": {f"name.{other_hash}": "no-tenant"}}),
        ("PATCH", "secrets", "e2b-api-keys", MERGE, {"stringData": {other_hash: "valid"}}),
    ]  # fmt: skip
    # Earlier keys are untouched (a merge patch names only its own key).
    stored = api.get("secrets", NS, "e2b-api-keys")
    assert stored is not None and hash_api_key(KEY_A) in stored["data"]

    request = check_request("platform", headers={"x-api-key": key})
    async with asyncio.timeout(WAIT_S):
        while (await check(edge, request)).status.code != 0:
            await edge.keys.secret.wait_for(lambda i: key_hash in str(i.store))
    assert tenant(await check(edge, request)) == "team-c"

    code, out, _ = await cli(capsys, "list", *flags)
    assert code == 0
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:]}
    assert rows[key_hash[:12]] == ["valid", "team-c"]
    assert rows[other_hash[:12]] == ["valid", "default", "no-tenant"]
    assert rows[hash_api_key(KEY_A)[:12]] == ["valid", "team-a"]

    before = len(api.writes())
    code, _, err = await cli(capsys, "revoke", *flags, key_hash[:10])
    assert code == 0, err
    assert writes(api)[before:] == [
        ("PATCH", "secrets", "e2b-api-keys", MERGE, {"stringData": {key_hash: "revoked"}})
    ]
    async with asyncio.timeout(WAIT_S):
        while (await check(edge, request)).status.code == 0:
            await edge.keys.secret.wait_for(lambda i: stored_status(i, key_hash) == "revoked")
    assert denial(await check(edge, request))[0] == 401


async def test_errors_are_one_line_and_exit_1(
    api: FakeApi, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = ("--kubernetes", "--kubeconfig", str(kubeconfig))
    code, _, err = await cli(capsys, "revoke", *flags, "abcdef")
    assert (code, err.strip()) == (1, "agentcube-e2b keys: no key hash starts with abcdef")
    api.fail("PATCH", "configmaps", 403)
    code, out, err = await cli(capsys, "create", *flags, "--namespace", "team-a")
    assert code == 1 and out == ""
    assert "HTTP 403" in err
    assert [w.method for w in api.writes("secrets")] == []  # never valid without its tenant
