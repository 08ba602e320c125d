"""KeyInformers: the Secret and ConfigMap informers producing the edge's KeyIndex."""

from __future__ import annotations

import asyncio
import base64
import time

import kmock
from kubernetes.client import ApiClient

from extproc.core.api_keys import KeyStatus, hash_api_key, new_api_key
from extproc.k8s.keys import KeyInformers
from extproc.k8s.settings import KeySourceSettings
from support.kubeapi import FakeApi

from .conftest import FAST, WAIT_S, Runner

NS = "agentcube-system"
KEY = new_api_key()
OTHER = new_api_key()
HASH, OTHER_HASH = hash_api_key(KEY), hash_api_key(OTHER)


def secret(**statuses: str) -> dict[str, object]:
    data = {h: base64.b64encode(s.encode()).decode() for h, s in statuses.items()}
    return {
        "kind": "Secret",
        "apiVersion": "v1",
        "metadata": {"name": "e2b-api-keys", "namespace": NS, "managedFields": [{"x": 1}]},
        "type": "Opaque",
        "data": data,
    }


def config(**namespaces: str) -> dict[str, object]:
    return {
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": {"name": "e2b-api-key-config", "namespace": NS},
        "data": {"defaultNamespace": "e2b-default", **namespaces},
    }


def seed(api: FakeApi) -> None:
    api.put("configmaps", config(**{HASH: "team-a"}))
    api.put("secrets", secret(**{HASH: "valid", OTHER_HASH: "valid"}))
    # Neighbours the name selector must keep out (RBAC would forbid reading them anyway).
    api.put("secrets", {"metadata": {"name": "unrelated", "namespace": NS}, "data": {}})
    api.put("configmaps", {"metadata": {"name": "unrelated", "namespace": NS}, "data": {}})


async def loaded(api: FakeApi, client: ApiClient, run: Runner) -> KeyInformers:
    keys = KeyInformers(client, KeySourceSettings(), FAST)
    run(keys.watch())
    async with asyncio.timeout(WAIT_S):
        await keys.loaded.wait()
        # Each informer re-checks its predicate on its own changes (here: its watch opening).
        for informer, plural in ((keys.secret, "secrets"), (keys.config, "configmaps")):
            await informer.wait_for(lambda i, p=plural: any(w.plural == p for w in api.watchers))
    return keys


async def test_index_from_the_two_documents(api: FakeApi, client: ApiClient, run: Runner) -> None:
    seed(api)
    keys = await loaded(api, client, run)

    entry = keys.index.lookup(HASH)
    assert entry is not None and entry.status is KeyStatus.VALID and entry.namespace == "team-a"
    other = keys.index.lookup(OTHER_HASH)
    assert other is not None and other.namespace == "e2b-default"
    assert len(keys.index) == 2 and keys.connected
    # The transform dropped what the index never reads.
    assert "managedFields" not in keys.secret.store[f"{NS}/e2b-api-keys"]["metadata"]


async def test_watches_by_name_so_rbac_resource_names_apply(
    api: FakeApi, client: ApiClient, run: Runner
) -> None:
    seed(api)
    await loaded(api, client, run)
    for plural, name in (("secrets", "e2b-api-keys"), ("configmaps", "e2b-api-key-config")):
        for action in (kmock.action.LIST, kmock.action.WATCH):
            (request,) = api.requests(action, plural)
            assert request.params["fieldSelector"] == f"metadata.name={name}"
            assert request.namespace == NS
            assert request.url.path == f"/api/v1/namespaces/{NS}/{plural}"


async def test_a_revoked_key_is_refused_within_one_second_of_the_event(
    api: FakeApi, client: ApiClient, run: Runner
) -> None:
    seed(api)
    keys = await loaded(api, client, run)

    rv = api.put("secrets", secret(**{HASH: "revoked", OTHER_HASH: "valid"}))

    def revoked(_: object) -> bool:
        entry = keys.index.lookup(HASH)
        return entry is not None and entry.status is KeyStatus.REVOKED

    async with asyncio.timeout(WAIT_S):
        await keys.secret.wait_for(revoked)
    visible_at = time.perf_counter()
    elapsed = visible_at - api.served_at[rv]
    print(f"revocation: event served -> index refuses the key in {elapsed * 1e3:.2f} ms")
    assert elapsed < 1.0
    assert keys.index.lookup(OTHER_HASH) is not None


async def test_nothing_is_published_until_both_documents_are_synced(
    api: FakeApi, client: ApiClient, run: Runner
) -> None:
    seed(api)
    api.failing["configmaps"] = 403
    keys = KeyInformers(client, KeySourceSettings(), FAST)
    run(keys.watch())
    async with asyncio.timeout(WAIT_S):
        await keys.secret.synced.wait()
        await keys.config.wait_for(lambda i: i.status.last_error is not None)
    # With only the Secret, HASH would resolve to the default namespace: the wrong tenant.
    assert not keys.loaded.is_set() and len(keys.index) == 0

    del api.failing["configmaps"]
    async with asyncio.timeout(WAIT_S):
        await keys.loaded.wait()
    entry = keys.index.lookup(HASH)
    assert entry is not None and entry.namespace == "team-a"


async def test_an_invalid_secret_keeps_the_last_good_index(
    api: FakeApi, client: ApiClient, run: Runner
) -> None:
    seed(api)
    keys = await loaded(api, client, run)
    good = keys.index

    bad = api.put("secrets", secret(**{HASH: "maybe"}))
    async with asyncio.timeout(WAIT_S):
        await keys.secret.wait_for(lambda i: i.status.resource_version == str(bad))
    assert keys.index is good

    fixed = api.put("secrets", secret(**{HASH: "expired"}))
    async with asyncio.timeout(WAIT_S):
        await keys.secret.wait_for(lambda i: i.status.resource_version == str(fixed))
    entry = keys.index.lookup(HASH)
    assert entry is not None and entry.status is KeyStatus.EXPIRED
    assert keys.index.lookup(OTHER_HASH) is None


async def test_a_deleted_secret_refuses_every_key(
    api: FakeApi, client: ApiClient, run: Runner
) -> None:
    seed(api)
    keys = await loaded(api, client, run)
    rv = api.delete("secrets", NS, "e2b-api-keys")
    async with asyncio.timeout(WAIT_S):
        await keys.secret.wait_for(lambda i: i.status.resource_version == str(rv))
    assert len(keys.index) == 0 and keys.index.lookup(HASH) is None


async def test_the_cache_is_served_while_the_api_is_down(
    api: FakeApi, client: ApiClient, run: Runner
) -> None:
    seed(api)
    keys = await loaded(api, client, run)
    await api.stop()
    async with asyncio.timeout(WAIT_S):
        await keys.secret.wait_for(lambda i: not i.status.connected)
        await keys.config.wait_for(lambda i: not i.status.connected)
    assert not keys.connected
    assert keys.status()["secret"]["last_error"]
    entry = keys.index.lookup(HASH)
    assert entry is not None and entry.status is KeyStatus.VALID
