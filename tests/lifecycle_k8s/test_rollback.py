"""A Create that fails deletes what it made, whatever failed: a pod that never becomes Ready, a
picod that never answers, an API call refused on the way. Nothing is announced."""

from __future__ import annotations

import asyncio
import socket

import pytest

from extproc.core.errors import DeadlineExceeded, DomainError, Unavailable
from extproc.lifecycle.kubernetes import KubernetesBackend

from .conftest import COLD, POOLED, TENANT, Backends, Cluster, code_interpreter, spec

# picod exits at once on a flag it does not know: the pod fails, as with an image that
# cannot run.
BROKEN = "broken"


def leftovers(cluster: Cluster) -> dict[str, set[str]]:
    """What the lifecycle's objects left in the tenant namespace (pool sandboxes aside)."""
    found = {
        plural: {name for name in cluster.names(plural) if name.startswith("e2b-")}
        for plural in ("sandboxes", "sandboxclaims", "secrets", "pods")
    }
    return {plural: names for plural, names in found.items() if names}


def made_names(cluster: Cluster) -> set[str]:
    """The names of the objects the lifecycle created in the tenant namespace."""
    return {
        w.body["metadata"]["name"] for w in cluster.api.writes()
        if w.method == "POST" and w.namespace == TENANT
    }  # fmt: skip


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
async def test_a_pod_that_never_becomes_ready_is_rolled_back(
    cluster: Cluster, backends: Backends, warm: bool
) -> None:
    await cluster.stop_warm_pools()  # warm: a Sandbox is made for the claim, from the template
    template = code_interpreter(BROKEN, warmPoolSize=1 if warm else 0)
    template["spec"]["template"]["args"] = ["--no-such-flag"]
    cluster.api.put("codeinterpreters", template)
    if warm:
        await cluster.until(lambda: cluster.stored("sandboxwarmpools", BROKEN))
    backend = await backends.start(ready_timeout_s=1.5)
    with pytest.raises(DeadlineExceeded, match=r"not ready within 1.5 s .* it was deleted"):
        await backend.create(spec(BROKEN, env_vars={"A": "b"}))
    (name,) = {n for n in made_names(cluster) if n.startswith("e2b-")}
    writes = [(w.method, w.plural) for w in cluster.api.writes() if w.method != "PATCH"
              and name in (w.name, (w.body or {}).get("metadata", {}).get("name"))]  # fmt: skip
    made = [plural for method, plural in writes if method == "POST"]
    assert made == (["sandboxclaims", "secrets"] if warm else ["secrets", "sandboxes"])
    deleted = [plural for method, plural in writes if method == "DELETE"]
    assert set(made) <= set(deleted)
    await cluster.until(lambda: not leftovers(cluster))
    assert backend.hub.revision == 0  # nothing was announced


async def test_a_picod_that_never_answers_is_rolled_back(
    cluster: Cluster, backends: Backends
) -> None:
    with socket.socket() as closed:  # a port nothing listens on: the pod is Ready, picod is not
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    backend = await backends.start(ready_timeout_s=1.5, picod_port=port)
    with pytest.raises(DeadlineExceeded):
        await backend.create(spec())
    assert [w.method for w in cluster.api.writes("sandboxes")] == ["POST", "DELETE"]
    await cluster.until(lambda: not leftovers(cluster))
    assert backend.hub.revision == 0


FAILURES = [
    (COLD, "POST", "secrets"),
    (COLD, "POST", "sandboxes"),
    (COLD, "PATCH", "secrets"),  # the owner reference
    (POOLED, "POST", "sandboxclaims"),
    (POOLED, "POST", "secrets"),
    (POOLED, "PATCH", "sandboxes"),  # labels and proof on the bound Sandbox
]


async def test_an_api_failure_on_the_way_is_rolled_back(
    cluster: Cluster, backends: Backends
) -> None:
    api = cluster.api
    await cluster.stop_warm_pools()  # the claims bind Sandboxes made for them
    api.put("codeinterpreters", code_interpreter(POOLED, warmPoolSize=1))
    await cluster.until(lambda: cluster.stored("sandboxwarmpools", POOLED))
    backend = await backends.start()
    for template, method, plural in FAILURES:
        case = f"{template}: {method} {plural}"
        start = len(api.log)
        api.fail(method, plural, 500)
        with pytest.raises(Unavailable, match="HTTP 500"):
            await backend.create(spec(template))
        await cluster.until(lambda: not leftovers(cluster))
        writes = [w for w in api.log[start:] if w.method != "GET" and w.namespace == TENANT]
        posts = [(w.plural, w.body["metadata"]["name"]) for w in writes if w.method == "POST"]
        made = posts[:-1] if method == "POST" else posts  # the refused POST made nothing
        deleted = [(w.plural, w.name) for w in writes if w.method == "DELETE"]
        # each by name (a DELETE of what its owner's deletion took already does no harm),
        # and nothing of another sandbox
        assert set(made) <= set(deleted), (case, writes)
        assert {name for _, name in deleted} <= {name for _, name in posts}, (case, writes)
    assert backend.hub.revision == 0
    assert backend.settings.ready_timeout_s > 1  # the failures, not a timeout, ended them


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
async def test_a_sandbox_whose_end_comes_before_its_pod_is_ready_fails_the_create_at_once(
    cluster: Cluster, backends: Backends, warm: bool
) -> None:
    """A timeout shorter than the pod's start: the controller deletes the Sandbox (or the
    claim) at its shutdownTime while the Create still waits for the pod. The Create must end
    then, not wait out its whole ready timeout (120 s by default) and report the pod as slow.
    The pod here waits for a Secret that never comes, so it is never Ready."""
    await cluster.stop_warm_pools()
    pending = code_interpreter("pending", warmPoolSize=1 if warm else 0)
    pending["spec"]["template"]["environment"] = [
        {"name": "X", "valueFrom": {"secretKeyRef": {"name": "never", "key": "x"}}}]  # fmt: skip
    cluster.api.put("codeinterpreters", pending)
    if warm:
        await cluster.until(lambda: cluster.stored("sandboxwarmpools", "pending"))
    backend = await backends.start(ready_timeout_s=60.0)
    with pytest.raises(DomainError) as error:
        # far beyond the 1 s timeout and the informers' latency, far below the ready timeout
        async with asyncio.timeout(6.0):
            await backend.create(spec("pending", timeout_s=1))
    assert not isinstance(error.value, DeadlineExceeded) or "within 60 s" not in str(error.value)
    await cluster.until(lambda: not leftovers(cluster))
    assert backend.hub.revision == 0
