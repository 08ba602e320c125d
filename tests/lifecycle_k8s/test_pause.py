"""Pause scales the pod down (v1alpha1 `replicas: 0`, v1beta1 `operatingMode: Suspended`) and
marks the Sandbox paused; resume scales it up and, for a warm sandbox, binds the new pod
again with the envVars kept in the sandbox's Secret, even when the lifecycle service that
paused it is not the one that resumes it."""

from __future__ import annotations

import asyncio

import pytest

from extproc.core.errors import Conflict
from extproc.lifecycle.kubernetes import KubernetesBackend
from extproc.lifecycle.sandboxes import Sandbox, State

from .conftest import COLD, POOLED, WAIT_S, Cluster, name_of, picod_envs, picod_get

pytestmark = pytest.mark.asyncio(loop_scope="module")

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


async def test_pause_scales_down_and_resume_by_another_lifecycle_binds_again(
    cluster: Cluster, warm_pool: str
) -> None:
    backends = cluster.backends
    first = await backends.start()
    made = await asyncio.gather(
        first.create(cluster.spec(COLD, env_vars={"KEPT": VALUE})),
        first.create(cluster.spec(POOLED, env_vars={"KEPT": VALUE})),
    )
    pods = {s.sandbox_id: cluster.stored("pods", serving_name(cluster, s)) for s in made}
    for sandbox in made:
        paused = await first.pause(sandbox.sandbox_id, cluster.tenant)
        assert (paused.state, paused.endpoint_host) == (State.PAUSED, "")
        check_paused(cluster, sandbox)
    names = [serving_name(cluster, s) for s in made]
    await cluster.until(lambda: not any(cluster.stored("pods", name) for name in names))
    sid = made[0].sandbox_id
    with pytest.raises(Conflict, match="already paused"):
        await first.pause(sid, cluster.tenant)
    with pytest.raises(Conflict, match="paused"):
        await first.set_timeout(sid, cluster.tenant, 60)

    await backends.stop(first)  # the lifecycle service restarts: it knows no envVars now
    second = await backends.start()
    for sandbox in made:
        assert (await second.get(sandbox.sandbox_id, cluster.tenant)).state is State.PAUSED
    resumed = await asyncio.gather(
        *(second.resume(s.sandbox_id, cluster.tenant, 120) for s in made)
    )
    for before, after in zip(made, resumed, strict=True):
        await check_resumed(cluster, before, after)
        pod = cluster.stored("pods", serving_name(cluster, before))
        old = pods[before.sandbox_id]
        assert pod is not None and old is not None
        assert pod["metadata"]["uid"] != old["metadata"]["uid"]
    with pytest.raises(Conflict, match="not paused"):
        await second.resume(sid, cluster.tenant, None)


async def test_connect_resumes_a_paused_sandbox(
    cluster: Cluster, backend: KubernetesBackend
) -> None:
    sandbox = await backend.create(cluster.spec(env_vars={"KEPT": VALUE}))
    await backend.pause(sandbox.sandbox_id, cluster.tenant)
    # Its pod is gone, as the lifecycle sees it (a connect at once may find the old pod kept)
    pods, where = backend.pod_informer, f"{cluster.tenant}/{name_of(sandbox.sandbox_id)}"
    assert pods is not None
    await asyncio.wait_for(pods.wait_for(lambda i: where not in i.store), WAIT_S)
    connected, resumed = await backend.connect(sandbox.sandbox_id, cluster.tenant, 60)
    assert resumed
    await check_resumed(cluster, sandbox, connected)
    again, resumed = await backend.connect(sandbox.sandbox_id, cluster.tenant, 60)
    assert not resumed and again.endpoint_host == connected.endpoint_host
