"""Pause scales the pod down (v1alpha1 `replicas: 0`, v1beta1 `operatingMode: Suspended`) and
marks the Sandbox paused; resume scales it up and, for a warm sandbox, binds the new pod
again with the envVars kept in the sandbox's Secret, even when the lifecycle service that
paused it is not the one that resumes it."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from extproc.core.errors import Conflict
from extproc.lifecycle.kubernetes import KubernetesBackend
from extproc.lifecycle.sandboxes import Sandbox, State

from .conftest import COLD, POOLED, WAIT_S, Cluster, name_of, picod_envs, picod_get

pytestmark = pytest.mark.asyncio(loop_scope="package")

STATE = "e2b.agentcube.io/state"
VALUE = "kept-across-the-pause"


def serving_name(cluster: Cluster, sandbox: Sandbox) -> str:
    claim = cluster.stored("sandboxclaims", name_of(sandbox.sandbox_id))
    return str(claim["status"]["sandbox"]["name"]) if claim else name_of(sandbox.sandbox_id)


def check_paused(cluster: Cluster, sandbox: Sandbox) -> None:
    name = serving_name(cluster, sandbox)
    cr = cluster.stored("sandboxes", name)
    assert cr is not None and cr["metadata"]["annotations"][STATE] == "paused"
    assert cr["spec"] | cluster.release.running_spec(False) == cr["spec"]  # scaled down
    assert "shutdownTime" not in cr["spec"]  # a paused sandbox has no end
    claim = cluster.stored("sandboxclaims", name_of(sandbox.sandbox_id)) or {"spec": {}}
    assert "shutdownTime" not in claim["spec"].get("lifecycle", {})


async def check_resumed(cluster: Cluster, before: Sandbox, resumed: Sandbox) -> None:
    """Running again on a new pod that is this sandbox's: its token and its envVars."""
    assert resumed.state is State.RUNNING and resumed.endpoint_host
    assert resumed.endpoint_host != before.endpoint_host
    cr = cluster.stored("sandboxes", serving_name(cluster, before))
    assert cr is not None and STATE not in cr["metadata"]["annotations"]
    assert cr["spec"] | cluster.release.running_spec(True) == cr["spec"]
    assert (await picod_envs(resumed))["KEPT"] == VALUE
    sid, token = resumed.sandbox_id, resumed.envd_access_token
    other = await picod_get(resumed, "/envs", jwt_for="zz" + sid[2:], token=token)
    assert other.status_code == 401


def notes_of(obj: Mapping[str, Any] | None) -> Mapping[str, str]:
    return dict((obj or {}).get("metadata", {}).get("annotations") or {})


async def seen_paused(backend: KubernetesBackend, where: str) -> None:
    """Until the backend's informers show the Sandbox at `where` paused and its pod gone (a
    connect before that may find the old pod kept, or meet the race below)."""
    pods, sandboxes = backend.pod_informer, backend.sandbox_informer
    assert pods is not None and sandboxes is not None
    await asyncio.wait_for(pods.wait_for(lambda i: where not in i.store), WAIT_S)
    paused = sandboxes.wait_for(lambda i: STATE in notes_of(i.store.get(where)))
    await asyncio.wait_for(paused, WAIT_S)


async def test_pause_scales_down_and_a_lifecycle_started_since_resumes_and_binds_again(
    cluster: Cluster, backend: KubernetesBackend, warm_pool: str
) -> None:
    made = await asyncio.gather(
        backend.create(cluster.spec(COLD, env_vars={"KEPT": VALUE})),
        backend.create(cluster.spec(POOLED, env_vars={"KEPT": VALUE})),
    )
    pods = {s.sandbox_id: cluster.stored("pods", serving_name(cluster, s)) for s in made}
    for sandbox in made:
        paused = await backend.pause(sandbox.sandbox_id, cluster.tenant)
        assert (paused.state, paused.endpoint_host) == (State.PAUSED, "")
        check_paused(cluster, sandbox)
    for sandbox in made:
        await seen_paused(backend, f"{cluster.tenant}/{serving_name(cluster, sandbox)}")
    sid = made[0].sandbox_id
    with pytest.raises(Conflict, match="already paused"):
        await backend.pause(sid, cluster.tenant)
    with pytest.raises(Conflict, match="paused"):
        await backend.set_timeout(sid, cluster.tenant, 60)

    # A lifecycle service started since (a restart, another replica) knows no envVars.
    # Resume, or Connect (which resumes a paused sandbox).
    later = await cluster.backends.start()
    for sandbox in made:
        assert (await later.get(sandbox.sandbox_id, cluster.tenant)).state is State.PAUSED
    (cold, connected), warm = await asyncio.gather(
        later.connect(made[0].sandbox_id, cluster.tenant, 120),
        later.resume(made[1].sandbox_id, cluster.tenant, 120),
    )
    assert connected
    resumed = [cold, warm]
    for before, after in zip(made, resumed, strict=True):
        await check_resumed(cluster, before, after)
        pod = cluster.stored("pods", serving_name(cluster, before))
        old = pods[before.sandbox_id]
        assert pod is not None and old is not None
        assert pod["metadata"]["uid"] != old["metadata"]["uid"]
    with pytest.raises(Conflict, match="not paused"):
        await later.resume(sid, cluster.tenant, None)
    again, connected = await later.connect(sid, cluster.tenant, 60)
    assert not connected and again.endpoint_host == cold.endpoint_host


async def test_a_paused_sandbox_stays_paused_when_its_pods_deletion_is_seen_first(
    lone_cluster: Cluster,
) -> None:
    """The lifecycle reads Sandboxes and pods through two watches, so the pod's deletion (the
    controller acting on the pause) may reach it before the Sandbox's own change does. That
    older Sandbox must not undo the pause the lifecycle itself just wrote."""
    cluster = lone_cluster
    backend = await cluster.backends.start()
    sandbox = await backend.create(cluster.spec())
    sid, tenant = sandbox.sandbox_id, cluster.tenant
    where = f"{tenant}/{name_of(sid)}"
    pods, sandboxes = backend.pod_informer, backend.sandbox_informer
    assert pods is not None and sandboxes is not None

    cluster.api.hold_watches("sandboxes")  # the Sandbox watch lags behind the pod watch
    await backend.pause(sid, tenant)
    await asyncio.wait_for(pods.wait_for(lambda i: where not in i.store), WAIT_S)
    assert (await backend.get(sid, tenant)).state is State.PAUSED

    cluster.api.end_watches("sandboxes")  # it catches up
    await seen_paused(backend, where)
    assert (await backend.get(sid, tenant)).state is State.PAUSED
    connected, resumed = await backend.connect(sid, tenant, 60)
    assert resumed and connected.state is State.RUNNING
