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

from .conftest import WAIT_S, Cluster, is_ready, name_of

pytestmark = pytest.mark.asyncio(loop_scope="package")


ID_LABEL = "e2b.agentcube.io/sandbox-id"


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


async def test_copies_of_a_sandbox_change_nothing_for_the_victim(
    cluster: Cluster, backend: KubernetesBackend
) -> None:
    """One in another namespace under the victim's name, one beside the victim under
    another name: each with a pod that runs and carries the victim's id label."""
    api = cluster.api
    victim = await backend.create(cluster.spec())
    sid = victim.sandbox_id
    stream = backend.watch()
    while (await anext(stream)).type is not EventType.SYNCED:
        pass

    stored = cluster.stored("sandboxes", name_of(sid))
    assert stored is not None
    copies = [(cluster.other, name_of(sid)), (cluster.tenant, "stolen")]
    for namespace, name in copies:
        api.put("secrets", token_secret(namespace, name))
        api.put("sandboxes", copied(stored, namespace, name))
    await cluster.until(lambda: all(is_ready(cluster.stored("pods", m, n)) for n, m in copies))
    for namespace, name in copies:
        pod = cluster.stored("pods", name, namespace)
        assert pod is not None and pod["metadata"]["labels"][ID_LABEL] == sid
    # the lifecycle's informers have seen them all
    informers = (backend.sandbox_informer, backend.pod_informer)
    keys = {f"{namespace}/{name}" for namespace, name in copies}
    for informer in informers:
        assert informer is not None
        await asyncio.wait_for(informer.wait_for(lambda i: keys <= set(i.store)), WAIT_S)

    got = await backend.get(sid, cluster.tenant)
    assert got == victim, cluster.stored("pods", name_of(sid))
    with pytest.raises(NotFound):
        await backend.get(sid, cluster.other)
    page = await backend.list_sandboxes(ListQuery(tenant=cluster.tenant))
    assert [s.sandbox_id for s in page.sandboxes] == [sid]
    assert (await backend.list_sandboxes(ListQuery(tenant=cluster.other))).sandboxes == []

    # The copies go: the victim is not reported gone
    for namespace, name in copies:
        api.delete("sandboxes", namespace, name)
    sandboxes = backend.sandbox_informer
    assert sandboxes is not None
    await asyncio.wait_for(sandboxes.wait_for(lambda i: not keys & set(i.store)), WAIT_S)
    got = await backend.get(sid, cluster.tenant)
    assert got == victim, cluster.stored("pods", name_of(sid))
    # ... and the victim's own end is reported, as its own: nothing was published about the
    # copies (its pod's deletion may be seen before the Sandbox's, as a change of it)
    await backend.kill(sid, cluster.tenant)
    killed = await asyncio.wait_for(anext(stream), WAIT_S)
    while killed.type is EventType.UPDATED and killed.sandbox is not None:
        assert (killed.sandbox.sandbox_id, killed.sandbox.tenant) == (sid, cluster.tenant)
        killed = await asyncio.wait_for(anext(stream), WAIT_S)
    assert killed.type is EventType.KILLED and killed.sandbox is not None
    assert (killed.sandbox.sandbox_id, killed.sandbox.tenant) == (sid, cluster.tenant)
    await stream.aclose()  # type: ignore[attr-defined]
