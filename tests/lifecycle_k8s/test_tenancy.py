"""A tenant who may create Sandboxes (and the Secrets their pods read) in its own namespace
copies another tenant's Sandbox, id label, annotations and proof included: the lifecycle's
index does not count it, so the victim's Get, List and Watch stay as they were and the
attacker's tenant sees nothing."""

from __future__ import annotations

import asyncio
import copy

import pytest

from extproc.core.errors import NotFound
from extproc.lifecycle.kubernetes import KubernetesBackend
from extproc.lifecycle.sandboxes import EventType, ListQuery
from support.kubeapi import Obj

from .conftest import OTHER, TENANT, WAIT_S, Cluster, is_ready, name_of, spec


def copied(victim: Obj, namespace: str, name: str) -> Obj:
    """The victim's Sandbox re-made by the attacker: same labels and annotations (the proof
    too) and pod template."""
    metadata = victim["metadata"]
    return {
        "apiVersion": victim["apiVersion"],
        "kind": "Sandbox",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": dict(metadata["labels"]),
                     "annotations": dict(metadata["annotations"])},
        "spec": {k: copy.deepcopy(v) for k, v in victim["spec"].items()
                 if k not in ("shutdownTime", "shutdownPolicy")},
    }  # fmt: skip


def token_secret(namespace: str, name: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": namespace},
            "stringData": {"access-token": "attacker", "env-vars.json": "{}"}}  # fmt: skip


@pytest.mark.parametrize("namespace", [OTHER, TENANT], ids=["other-namespace", "same-namespace"])
async def test_a_copied_sandbox_changes_nothing_for_the_victim(
    cluster: Cluster, backend: KubernetesBackend, namespace: str
) -> None:
    """In another namespace under the victim's name, or beside the victim under another."""
    api = cluster.api
    victim = await backend.create(spec())
    sid = victim.sandbox_id
    stream = backend.watch()
    assert (await anext(stream)).type is EventType.EXISTING
    assert (await anext(stream)).type is EventType.SYNCED
    revision = backend.hub.revision

    stored = cluster.stored("sandboxes", name_of(sid))
    assert stored is not None
    name = name_of(sid) if namespace == OTHER else "stolen"
    api.put("secrets", token_secret(namespace, name))
    api.put("sandboxes", copied(stored, namespace, name))
    # Its pod runs, with the victim's id label: the informers see both
    await cluster.until(lambda: is_ready(cluster.stored("pods", name, namespace)))
    assert backend.sandbox_informer is not None and backend.pod_informer is not None
    where = f"{namespace}/{name}"
    for informer in (backend.sandbox_informer, backend.pod_informer):
        await asyncio.wait_for(informer.wait_for(lambda i: where in i.store), WAIT_S)
    attacker_cr = cluster.stored("sandboxes", name, namespace)
    assert attacker_cr is not None
    assert attacker_cr["metadata"]["labels"]["e2b.agentcube.io/sandbox-id"] == sid

    assert await backend.get(sid, TENANT) == victim
    assert backend.hub.revision == revision  # nothing was published
    with pytest.raises(NotFound):
        await backend.get(sid, OTHER)
    page = await backend.list_sandboxes(ListQuery(tenant=TENANT))
    assert [s.sandbox_id for s in page.sandboxes] == [sid]
    assert (await backend.list_sandboxes(ListQuery(tenant=OTHER))).sandboxes == []

    # The attacker deletes its copy: the victim is not reported gone
    api.delete("sandboxes", namespace, name)
    await asyncio.wait_for(
        backend.sandbox_informer.wait_for(lambda i: where not in i.store), WAIT_S
    )
    assert await backend.get(sid, TENANT) == victim
    assert backend.hub.revision == revision
    # ... and the victim's own end is reported once, as its own
    await backend.kill(sid, TENANT)
    killed = await asyncio.wait_for(anext(stream), WAIT_S)
    assert (killed.type, killed.sandbox.sandbox_id) == (EventType.KILLED, sid)  # type: ignore[union-attr]
    assert killed.sandbox is not None and killed.sandbox.tenant == TENANT
    await stream.aclose()  # type: ignore[attr-defined]
