"""A Create that fails deletes what it made, whatever failed: a pod that never becomes Ready, a
picod that never answers, an API call refused on the way, a sandbox that ends before it is
ready. Nothing is announced."""

from __future__ import annotations

import asyncio
import socket

import pytest

from extproc.core.errors import DeadlineExceeded, DomainError, Unavailable

from .conftest import COLD, POOLED, Cluster

pytestmark = pytest.mark.asyncio(loop_scope="package")


def leftovers(cluster: Cluster) -> dict[str, set[str]]:
    """What the lifecycle's objects left in the test's namespace (pool sandboxes aside)."""
    found = {
        plural: {name for name in cluster.names(plural) if name.startswith("e2b-")}
        for plural in ("sandboxes", "sandboxclaims", "secrets", "pods")
    }
    return {plural: names for plural, names in found.items() if names}


async def test_a_pod_that_never_becomes_ready_is_rolled_back(lone_cluster: Cluster) -> None:
    """picod exits at once on a flag it does not know: the pod fails, as with an image that
    cannot run. Cold, and warm from an empty pool (the claim's Sandbox is made from the
    template)."""
    cluster = lone_cluster
    await cluster.stop_warm_pools()
    for name, pool in (("broken", 0), ("broken-pool", 1)):
        cluster.put_interpreter(name, warmPoolSize=pool)
        broken = cluster.stored("codeinterpreters", name)
        assert broken is not None
        broken["spec"]["template"]["args"] = ["--no-such-flag"]
        cluster.api.put("codeinterpreters", broken)
    await cluster.until(lambda: cluster.stored("sandboxwarmpools", "broken-pool"))
    backend = await cluster.backends.start(ready_timeout_s=0.8)
    for template, made in (("broken", ["secrets", "sandboxes"]),
                           ("broken-pool", ["sandboxclaims", "secrets"])):  # fmt: skip
        start = len(cluster.api.log)
        with pytest.raises(DeadlineExceeded, match=r"not ready within 0.8 s .* it was deleted"):
            await backend.create(cluster.spec(template, env_vars={"A": "b"}))
        writes = [w for w in cluster.api.log[start:] if w.method in ("POST", "DELETE")]
        assert [w.plural for w in writes if w.method == "POST"] == made
        assert set(made) <= {w.plural for w in writes if w.method == "DELETE"}
        await cluster.until(lambda: not leftovers(cluster))
    assert backend.hub.revision == 0  # nothing was announced


async def test_a_picod_that_never_answers_is_rolled_back(cluster: Cluster) -> None:
    with socket.socket() as closed:  # a port nothing listens on: the pod is Ready, picod is not
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    backend = await cluster.backends.start(ready_timeout_s=0.8, picod_port=port)
    with pytest.raises(DeadlineExceeded):
        await backend.create(cluster.spec())
    assert [w.method for w in cluster.writes("sandboxes")] == ["POST", "DELETE"]
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


async def test_an_api_failure_on_the_way_is_rolled_back(lone_cluster: Cluster) -> None:
    cluster, api = lone_cluster, lone_cluster.api
    await cluster.stop_warm_pools()  # the claims bind Sandboxes made for them
    cluster.put_interpreter(POOLED, warmPoolSize=1)
    await cluster.until(lambda: cluster.stored("sandboxwarmpools", POOLED))
    backend = await cluster.backends.start()
    for template, method, plural in FAILURES:
        case = f"{template}: {method} {plural}"
        start = len(api.log)
        api.fail(method, plural, 500)
        with pytest.raises(Unavailable, match="HTTP 500"):
            await backend.create(cluster.spec(template))
        await cluster.until(lambda: not leftovers(cluster))
        writes = [w for w in api.log[start:] if w.method != "GET" and w.namespace == cluster.tenant]
        posts = [(w.plural, w.body["metadata"]["name"]) for w in writes if w.method == "POST"]
        made = posts[:-1] if method == "POST" else posts  # the refused POST made nothing
        deleted = [(w.plural, w.name) for w in writes if w.method == "DELETE"]
        # each by name (a DELETE of what went with its owner already does no harm), and
        # nothing of another sandbox
        assert set(made) <= set(deleted), (case, writes)
        assert {name for _, name in deleted} <= {name for _, name in posts}, (case, writes)
    assert backend.hub.revision == 0


async def test_a_sandbox_whose_end_comes_before_its_pod_is_ready_fails_the_create_at_once(
    lone_cluster: Cluster,
) -> None:
    """A timeout shorter than the pod's start: the controller deletes the Sandbox (or the
    claim) at its shutdownTime while the Create still waits for the pod. The Create must end
    then, not wait out its whole ready timeout (120 s by default) and report the pod as slow.
    The pods here wait for a Secret that never comes, so they are never Ready."""
    cluster = lone_cluster
    await cluster.stop_warm_pools()
    never = [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "never", "key": "x"}}}]
    for name, pool in (("pending", 0), ("pending-pool", 1)):
        cluster.put_interpreter(name, warmPoolSize=pool)
        pending = cluster.stored("codeinterpreters", name)
        assert pending is not None
        pending["spec"]["template"]["environment"] = never
        cluster.api.put("codeinterpreters", pending)
    await cluster.until(lambda: cluster.stored("sandboxwarmpools", "pending-pool"))
    backend = await cluster.backends.start(ready_timeout_s=60.0)

    async def create(template: str) -> BaseException | None:
        try:
            # far beyond the 1 s timeout and the informers' latency, far below 60 s
            async with asyncio.timeout(6.0):
                await backend.create(cluster.spec(template, timeout_s=1))
        except BaseException as error:
            return error
        return None

    outcomes = await asyncio.gather(create("pending"), create("pending-pool"))
    for template, outcome in zip(("cold", "warm"), outcomes, strict=True):
        assert isinstance(outcome, DomainError), (template, repr(outcome))
        assert "within 60 s" not in str(outcome), template
    await cluster.until(lambda: not leftovers(cluster))
    assert backend.hub.revision == 0
