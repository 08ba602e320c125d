"""Timeouts (end-at, the Sandbox's `spec.shutdownTime`, a claim's `spec.lifecycle`, the
CodeInterpreter's sessionTimeout and maxSessionDuration), expiry with and without the
lifecycle service, List, and WatchSandboxes: order, expiry, and who ended a sandbox."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from extproc.core.errors import InvalidArgument, NotFound
from extproc.lifecycle.kubernetes import KubernetesBackend
from extproc.lifecycle.sandboxes import Event, EventType, ListQuery, OnTimeout, Sandbox, State

from .conftest import COLD, POOLED, WAIT_S, Cluster, fill_warm_pool, name_of, warm_members

pytestmark = pytest.mark.asyncio(loop_scope="package")

END_AT = "e2b.agentcube.io/end-at"


def rfc(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


async def next_event(stream: AsyncIterator[Event], timeout_s: float = WAIT_S) -> Event:
    return await asyncio.wait_for(anext(stream), timeout_s)


async def next_of(
    stream: AsyncIterator[Event], sandbox_id: str, *, skip: tuple[EventType, ...] = ()
) -> Event:
    """The next event about `sandbox_id`, passing over the types in `skip` (its pod's
    changes, which a loaded machine may deliver first)."""
    while True:
        event = await next_event(stream)
        about = event.sandbox is not None and event.sandbox.sandbox_id == sandbox_id
        if about and event.type not in skip:
            return event


async def ends_of(stream: AsyncIterator[Event], sandbox_ids: set[str]) -> dict[str, Event]:
    """The first event other than UPDATED about each of `sandbox_ids`, in any order."""
    ends: dict[str, Event] = {}
    while set(ends) != sandbox_ids:
        event = await next_event(stream)
        about = event.sandbox.sandbox_id if event.sandbox is not None else ""
        if about in sandbox_ids - set(ends) and event.type is not EventType.UPDATED:
            ends[about] = event
    return ends


def bound_name(cluster: Cluster, sandbox: Sandbox) -> str:
    """The Sandbox object that serves `sandbox` (a cold one's own, a warm one's claimed)."""
    claim = cluster.stored("sandboxclaims", name_of(sandbox.sandbox_id))
    if claim is None:
        return name_of(sandbox.sandbox_id)
    return str(claim["status"]["sandbox"]["name"])


async def check_timeouts(cluster: Cluster, backend: KubernetesBackend, sandbox: Sandbox) -> None:
    """set_timeout shortens, refresh lengthens, connect never shortens; each change is one
    merge patch of end-at and of the deletion time the controller honours."""
    sid, claim = sandbox.sandbox_id, name_of(sandbox.sandbox_id)
    warm = cluster.stored("sandboxclaims", claim) is not None
    name = bound_name(cluster, sandbox)
    start = len(cluster.api.log)
    now = time.time()
    after_set = await backend.set_timeout(sid, cluster.tenant, 30)
    assert now + 29 <= after_set.end_at <= time.time() + 30
    after_refresh = await backend.refresh(sid, cluster.tenant, 600)
    assert after_refresh.end_at >= after_set.end_at + 569
    after_connect, resumed = await backend.connect(sid, cluster.tenant, 10)
    assert not resumed and after_connect.end_at == after_refresh.end_at
    assert (await backend.get(sid, cluster.tenant)).end_at == after_refresh.end_at

    patches = [w for w in cluster.api.log[start:] if w.method != "GET"]
    assert all(w.method == "PATCH" for w in patches)
    assert {w.content_type for w in patches} == {"application/merge-patch+json"}
    ends = (after_set.end_at, after_refresh.end_at)  # none for the connect
    sandbox_patches = [w for w in patches if w.plural == "sandboxes"]
    assert [w.name for w in sandbox_patches] == [name, name]
    claim_patches = [w for w in patches if w.plural == "sandboxclaims"]
    assert [w.name for w in claim_patches] == ([claim, claim] if warm else [])
    for end, on_sandbox in zip(ends, sandbox_patches, strict=True):
        deletion = {"shutdownTime": rfc(end), "shutdownPolicy": "Delete"}
        assert on_sandbox.body["metadata"] == {"annotations": {END_AT: rfc(end)}}
        assert (on_sandbox.body.get("spec") or {}) == ({} if warm else deletion)
    for end, on_claim in zip(ends if warm else (), claim_patches, strict=True):
        deletion = {"shutdownTime": rfc(end), "shutdownPolicy": "Delete"}
        assert on_claim.body == {"spec": {"lifecycle": deletion}}

    cr = cluster.stored("sandboxes", name)
    assert cr is not None and cr["metadata"]["annotations"][END_AT] == rfc(after_refresh.end_at)
    if warm:
        stored_claim = cluster.stored("sandboxclaims", claim)
        assert stored_claim is not None
        assert stored_claim["spec"]["lifecycle"]["shutdownTime"] == rfc(after_refresh.end_at)
        assert "shutdownTime" not in cr["spec"]
    else:
        assert cr["spec"]["shutdownTime"] == rfc(after_refresh.end_at)


async def test_timeouts_move_end_at_and_the_controllers_deletion_time(
    cluster: Cluster, backend: KubernetesBackend, warm_pool: str
) -> None:
    """Cold: the Sandbox's own `spec.shutdownTime`. Warm: the claim's `spec.lifecycle` (a
    claimed Sandbox has no lifecycle of its own that the controller would honour)."""
    cold, warm = await asyncio.gather(
        backend.create(cluster.spec(COLD)), backend.create(cluster.spec(POOLED))
    )
    assert bound_name(cluster, warm) == warm_pool
    await check_timeouts(cluster, backend, cold)
    await check_timeouts(cluster, backend, warm)
    with pytest.raises(NotFound):
        await backend.set_timeout(cold.sandbox_id, cluster.other, 60)


async def test_session_timeout_is_the_default_and_max_session_duration_the_cap(
    cluster: Cluster, backend: KubernetesBackend
) -> None:
    cluster.put_interpreter("short", sessionTimeout="2m", maxSessionDuration="10m")
    cluster.put_interpreter("long", sessionTimeout="1h", maxSessionDuration="10m")
    with pytest.raises(InvalidArgument, match="cannot be greater than"):
        await backend.create(cluster.spec("short", timeout_s=601))
    assert cluster.writes() == []

    # no timeout asked for: the template's sessionTimeout, capped by its maxSessionDuration
    short, long = await asyncio.gather(
        backend.create(cluster.spec("short", timeout_s=300, timeout_requested=False)),
        backend.create(cluster.spec("long", timeout_s=300, timeout_requested=False)),
    )
    assert short.end_at - short.started_at == 120
    assert long.end_at - long.started_at == 600
    cr = cluster.stored("sandboxes", name_of(short.sandbox_id))
    assert cr is not None and cr["metadata"]["annotations"]["e2b.agentcube.io/max-duration-s"] == (
        "600")  # fmt: skip
    # and the cap holds for later changes too
    capped = await backend.set_timeout(short.sandbox_id, cluster.tenant, 3600)
    assert capped.end_at == short.started_at + 600
    cr = cluster.stored("sandboxes", name_of(short.sandbox_id))
    assert cr is not None and cr["spec"]["shutdownTime"] == rfc(short.started_at + 600)
    with pytest.raises(InvalidArgument, match="cannot be greater than"):
        await backend.refresh(short.sandbox_id, cluster.tenant, 601)


async def test_a_sandbox_that_pauses_on_timeout_has_no_deletion_time_and_is_paused_at_its_end(
    cluster: Cluster, backend: KubernetesBackend, warm_pool: str
) -> None:
    stream = backend.watch()
    while (await next_event(stream)).type is not EventType.SYNCED:
        pass
    cold, warm = await asyncio.gather(
        backend.create(cluster.spec(COLD, on_timeout=OnTimeout.PAUSE)),
        backend.create(cluster.spec(POOLED, on_timeout=OnTimeout.PAUSE)),
    )
    (post,) = [w for w in cluster.writes("sandboxes") if w.method == "POST"]
    assert "shutdownTime" not in post.body["spec"]
    claim = cluster.stored("sandboxclaims", name_of(warm.sandbox_id))
    assert claim is not None and "shutdownTime" not in claim["spec"].get("lifecycle", {})
    for sandbox in (cold, warm):  # no deletion time when the end moves either
        await backend.set_timeout(sandbox.sandbox_id, cluster.tenant, 1)
    claim = cluster.stored("sandboxclaims", name_of(warm.sandbox_id))
    assert claim is not None and "shutdownTime" not in claim["spec"].get("lifecycle", {})
    cr = cluster.stored("sandboxes", name_of(cold.sandbox_id))
    assert cr is not None and "shutdownTime" not in cr["spec"]
    waiting = {cold.sandbox_id, warm.sandbox_id}
    while waiting:  # each is paused by the lifecycle at its end
        event = await next_event(stream)
        paused = event.sandbox if event.type is EventType.UPDATED else None
        if paused is not None and paused.state is State.PAUSED:
            waiting.discard(paused.sandbox_id)
    names = [bound_name(cluster, sandbox) for sandbox in (cold, warm)]
    await cluster.until(lambda: not any(cluster.stored("pods", name) for name in names))
    for sandbox, name in zip((cold, warm), names, strict=True):
        cr = cluster.stored("sandboxes", name)
        assert cr is not None  # paused, not deleted
        assert cr["metadata"]["annotations"]["e2b.agentcube.io/state"] == "paused"
        assert not cluster.release.runs(cr) and "shutdownTime" not in cr["spec"]
        assert (await backend.get(sandbox.sandbox_id, cluster.tenant)).state is State.PAUSED
    page = await backend.list_sandboxes(
        ListQuery(tenant=cluster.tenant, states=frozenset({State.PAUSED}))
    )
    assert {s.sandbox_id for s in page.sandboxes} == {cold.sandbox_id, warm.sandbox_id}
    await stream.aclose()  # type: ignore[attr-defined]


async def test_the_controllers_expire_sandboxes_the_lifecycle_does_not_and_it_tells_who_ended_them(
    lone_cluster: Cluster,
) -> None:
    """With the lifecycle's own expiry stopped, agent-sandbox's controllers delete a cold
    sandbox (its Sandbox's shutdownTime) and a warm one (its claim's lifecycle) at their end,
    and the garbage collector takes their pods and Secrets. The lifecycle, which only
    watched, reports them EXPIRED; a sandbox deleted by someone else before its end, KILLED."""
    cluster, backends = lone_cluster, lone_cluster.backends
    warm_pool = await fill_warm_pool(cluster)
    backend = await backends.start()
    cold, warm, early = await asyncio.gather(
        backend.create(cluster.spec(COLD)),
        backend.create(cluster.spec(POOLED)),
        backend.create(cluster.spec(COLD)),
    )
    await backends.stop_reaping(backend)  # from here on the lifecycle deletes nothing itself
    stream = backend.watch()
    while (await next_event(stream)).type is not EventType.SYNCED:
        pass

    # someone else's hand, long before the end
    cluster.api.delete("sandboxes", cluster.tenant, name_of(early.sandbox_id))
    killed = await next_of(stream, early.sandbox_id, skip=(EventType.UPDATED,))
    assert killed.type is EventType.KILLED
    assert killed.sandbox is not None and killed.sandbox.end_reason == "killed"

    # 2 s, not 1: the end is whole seconds, and a controller deleting the Sandbox before
    # the lifecycle has the answer to its own patch makes that patch's sandbox unknown
    for sandbox in (cold, warm):
        await backend.set_timeout(sandbox.sandbox_id, cluster.tenant, 2)
    ended = await ends_of(stream, {cold.sandbox_id, warm.sandbox_id})
    assert {e.type for e in ended.values()} == {EventType.EXPIRED}
    assert {e.sandbox.end_reason for e in ended.values() if e.sandbox} == {"expired"}
    cold_name, claim = name_of(cold.sandbox_id), name_of(warm.sandbox_id)
    assert cluster.stored("sandboxes", cold_name) is None
    assert cluster.stored("sandboxclaims", claim) is None
    await cluster.until(lambda: not cluster.stored("sandboxes", warm_pool))
    await cluster.until(
        lambda: not cluster.names("pods") - {m["metadata"]["name"] for m in warm_members(cluster)}
    )
    for name in (cold_name, claim, name_of(early.sandbox_id)):
        assert cluster.stored("secrets", name) is None
    assert [w for w in cluster.writes() if w.method == "DELETE"] == []  # none was the lifecycle's
    await stream.aclose()  # type: ignore[attr-defined]


async def test_list_filters_and_pages(cluster: Cluster, backend: KubernetesBackend) -> None:
    tenant = cluster.tenant
    made = await asyncio.gather(
        *(backend.create(cluster.spec(metadata={"n": str(i)})) for i in range(2))
    )
    await backend.pause(made[1].sandbox_id, tenant)
    page = await backend.list_sandboxes(ListQuery(tenant=tenant, page_size=1))
    assert len(page.sandboxes) == 1 and page.next_page_token and page.total_running == 1
    rest = await backend.list_sandboxes(
        ListQuery(tenant=tenant, page_size=1, page_token=page.next_page_token)
    )
    assert {s.sandbox_id for s in page.sandboxes + rest.sandboxes} == {s.sandbox_id for s in made}
    assert not rest.next_page_token
    only = await backend.list_sandboxes(ListQuery(tenant=tenant, metadata={"n": "1"}))
    assert [s.sandbox_id for s in only.sandboxes] == [made[1].sandbox_id]
    running = await backend.list_sandboxes(
        ListQuery(tenant=tenant, states=frozenset({State.RUNNING}))
    )
    assert [s.sandbox_id for s in running.sandboxes] == [made[0].sandbox_id]
    assert (await backend.list_sandboxes(ListQuery(tenant=cluster.other))).sandboxes == []
    assert (await backend.list_sandboxes(ListQuery(tenant=tenant, template="x"))).sandboxes == []
    with pytest.raises(InvalidArgument, match="page token"):
        await backend.list_sandboxes(ListQuery(tenant=tenant, page_token="garbage"))


async def test_watch_order_and_expiry(cluster: Cluster, backend: KubernetesBackend) -> None:
    existing = await backend.create(cluster.spec())
    stream = backend.watch()
    snapshot = []
    while (event := await next_event(stream)).type is EventType.EXISTING:
        snapshot.append(event.sandbox)
    assert event.type is EventType.SYNCED and existing in snapshot
    await backend.set_timeout(existing.sandbox_id, cluster.tenant, 120)
    updated = await next_of(stream, existing.sandbox_id)
    assert updated.type is EventType.UPDATED
    assert updated.sandbox is not None and updated.sandbox.end_at <= time.time() + 120
    short = await backend.create(cluster.spec())
    created = await next_of(stream, short.sandbox_id)
    assert created.type is EventType.CREATED
    await backend.set_timeout(short.sandbox_id, cluster.tenant, 2)  # 2, not 1: as above
    assert (await next_of(stream, short.sandbox_id)).type is EventType.UPDATED
    expired = await next_of(stream, short.sandbox_id, skip=(EventType.UPDATED,))
    assert expired.type is EventType.EXPIRED
    assert expired.sandbox is not None and expired.sandbox.state is State.ENDED
    await cluster.until(lambda: not cluster.stored("sandboxes", name_of(short.sandbox_id)))
    await backend.kill(existing.sandbox_id, cluster.tenant)
    killed = await next_of(stream, existing.sandbox_id, skip=(EventType.UPDATED,))
    assert killed.type is EventType.KILLED
    revisions = [e.revision for e in (updated, created, expired, killed)]  # in order
    assert revisions == sorted(revisions) and len(set(revisions)) == 4
    await stream.aclose()  # type: ignore[attr-defined]
