"""Pause scales the pod down (v1alpha1 `replicas: 0`, v1beta1 `operatingMode: Suspended`) and
marks the Sandbox paused; resume scales it up and, for a warm sandbox, binds the new pod
again with the envVars kept in the sandbox's Secret, even when the lifecycle service that
paused it is not the one that resumes it."""

from __future__ import annotations

import pytest

from extproc.core.errors import Conflict
from extproc.lifecycle.sandboxes import Sandbox, State

from .conftest import (
    COLD,
    POOLED,
    TENANT,
    Backends,
    Cluster,
    fill_warm_pool,
    name_of,
    picod_envs,
    picod_get,
    spec,
)

STATE = "e2b.agentcube.io/state"
VALUE = "kept-across-the-pause"


def serving_name(cluster: Cluster, sandbox: Sandbox) -> str:
    claim = cluster.stored("sandboxclaims", name_of(sandbox.sandbox_id))
    return str(claim["status"]["sandbox"]["name"]) if claim else name_of(sandbox.sandbox_id)


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
async def test_pause_scales_down_and_resume_by_another_lifecycle_binds_again(
    cluster: Cluster, backends: Backends, warm: bool
) -> None:
    if warm:
        await fill_warm_pool(cluster)
    first = await backends.start()
    sandbox = await first.create(spec(POOLED if warm else COLD, env_vars={"KEPT": VALUE}))
    sid, name = sandbox.sandbox_id, serving_name(cluster, sandbox)
    old_pod = cluster.stored("pods", name)
    assert old_pod is not None

    paused = await first.pause(sid, TENANT)
    assert (paused.state, paused.endpoint_host) == (State.PAUSED, "")
    cr = cluster.stored("sandboxes", name)
    assert cr is not None and cr["metadata"]["annotations"][STATE] == "paused"
    assert cr["spec"] | cluster.release.running_spec(False) == cr["spec"]  # scaled down
    assert "shutdownTime" not in cr["spec"]  # a paused sandbox has no end
    claim = cluster.stored("sandboxclaims", name_of(sid))
    if warm:
        assert claim is not None and "shutdownTime" not in claim["spec"].get("lifecycle", {})
    await cluster.until(lambda: not cluster.stored("pods", name))
    with pytest.raises(Conflict, match="already paused"):
        await first.pause(sid, TENANT)
    with pytest.raises(Conflict, match="paused"):
        await first.set_timeout(sid, TENANT, 60)

    await backends.stop(first)  # the lifecycle service restarts
    second = await backends.start()
    assert (await second.get(sid, TENANT)).state is State.PAUSED
    resumed = await second.resume(sid, TENANT, 120)
    assert resumed.state is State.RUNNING and resumed.endpoint_host
    assert resumed.endpoint_host != sandbox.endpoint_host  # a new pod
    assert resumed.end_at >= resumed.started_at + 1
    cr = cluster.stored("sandboxes", name)
    assert cr is not None and STATE not in cr["metadata"]["annotations"]
    assert cr["spec"] | cluster.release.running_spec(True) == cr["spec"]
    new_pod = cluster.stored("pods", name)
    assert new_pod is not None and new_pod["metadata"]["uid"] != old_pod["metadata"]["uid"]
    # The new pod is this sandbox's: its token, its envVars (a warm one's from the Secret)
    envs = await picod_envs(resumed)
    assert envs["KEPT"] == VALUE
    other = await picod_get(resumed, "/envs", jwt_for="zz" + sid[2:],
                            token=resumed.envd_access_token)  # fmt: skip
    assert other.status_code == 401
    with pytest.raises(Conflict, match="not paused"):
        await second.resume(sid, TENANT, None)
    await second.kill(sid, TENANT)
    await cluster.until(lambda: not cluster.stored("pods", name))


async def test_connect_resumes_a_paused_sandbox(cluster: Cluster, backends: Backends) -> None:
    backend = await backends.start()
    sandbox = await backend.create(spec(env_vars={"KEPT": VALUE}))
    await backend.pause(sandbox.sandbox_id, TENANT)
    connected, resumed = await backend.connect(sandbox.sandbox_id, TENANT, 60)
    assert resumed and connected.state is State.RUNNING
    assert (await picod_envs(connected))["KEPT"] == VALUE
    again, resumed = await backend.connect(sandbox.sandbox_id, TENANT, 60)
    assert not resumed and again.endpoint_host == connected.endpoint_host
