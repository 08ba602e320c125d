"""Timeouts as merge patches, List, WatchSandboxes order and expiry of the kubernetes backend,
and the gRPC surface (status codes) through `serving` with a kubeconfig for the fake API."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2_grpc as pb_grpc
from extproc.lifecycle.kubernetes import KubernetesBackend
from extproc.lifecycle.sandboxes import CreateSpec, EventType, ListQuery, State
from extproc.lifecycle.server import serving
from extproc.lifecycle.settings import LifecycleSettings, ServerSettings
from support.kubeapi import FakeApi

from .conftest import OTHER, TENANT, Picod, settings

TEMPLATE = "code-interpreter-v1"


def rfc(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def spec(timeout_s: int = 300, **metadata: str) -> CreateSpec:
    return CreateSpec(tenant=TENANT, template=TEMPLATE, timeout_s=timeout_s, metadata=metadata)


async def test_timeouts_are_exact_merge_patches(
    api: FakeApi, backend: KubernetesBackend
) -> None:
    sandbox = await backend.create(spec())
    name = f"e2b-{sandbox.sandbox_id}"
    now = time.time()
    after_set = await backend.set_timeout(sandbox.sandbox_id, TENANT, 30)
    after_refresh = await backend.refresh(sandbox.sandbox_id, TENANT, 600)
    after_connect, resumed = await backend.connect(sandbox.sandbox_id, TENANT, 10)  # no growth
    assert not resumed and after_connect.end_at == after_refresh.end_at
    assert now + 29 <= after_set.end_at <= time.time() + 30
    patches = [w for w in api.writes("sandboxes") if w.method == "PATCH"]
    assert [(w.name, w.content_type) for w in patches] == [
        (name, "application/merge-patch+json")] * 2  # fmt: skip
    for patch, end in zip(patches, (after_set.end_at, after_refresh.end_at), strict=True):
        assert patch.body == {
            "metadata": {"annotations": {"e2b.agentcube.io/end-at": rfc(end)}},
            "spec": {"lifecycle": {"shutdownTime": rfc(end)}},
        }
    stored = api.get("sandboxes", TENANT, name)
    assert stored is not None
    assert stored["spec"]["lifecycle"]["shutdownTime"] == rfc(after_refresh.end_at)
    assert (await backend.get(sandbox.sandbox_id, TENANT)).end_at == after_refresh.end_at


async def test_list_filters_and_pages(backend: KubernetesBackend) -> None:
    made = [await backend.create(spec(n=str(i))) for i in range(3)]
    page = await backend.list_sandboxes(ListQuery(tenant=TENANT, page_size=2))
    assert len(page.sandboxes) == 2 and page.next_page_token and page.total_running == 3
    rest = await backend.list_sandboxes(
        ListQuery(tenant=TENANT, page_size=2, page_token=page.next_page_token)
    )
    seen = {s.sandbox_id for s in page.sandboxes + rest.sandboxes}
    assert seen == {s.sandbox_id for s in made} and not rest.next_page_token
    only = await backend.list_sandboxes(ListQuery(tenant=TENANT, metadata={"n": "1"}))
    assert [s.sandbox_id for s in only.sandboxes] == [made[1].sandbox_id]
    assert (await backend.list_sandboxes(ListQuery(tenant=OTHER))).sandboxes == []
    none = await backend.list_sandboxes(ListQuery(tenant=TENANT, template="other"))
    assert none.sandboxes == []


async def next_event(stream: Any) -> Any:
    return await asyncio.wait_for(anext(stream), 5)


async def test_watch_order_and_expiry(api: FakeApi, backend: KubernetesBackend) -> None:
    existing = await backend.create(spec())
    stream = backend.watch()
    first = await next_event(stream)
    assert (first.type, first.sandbox.sandbox_id) == (EventType.EXISTING, existing.sandbox_id)
    assert (await next_event(stream)).type is EventType.SYNCED
    # The update comes first: the 1 s sandbox may expire before a slow machine gets further.
    await backend.set_timeout(existing.sandbox_id, TENANT, 120)
    updated = await next_event(stream)
    assert (updated.type, updated.sandbox.sandbox_id) == (EventType.UPDATED, existing.sandbox_id)
    short = await backend.create(spec(timeout_s=1))
    created = await next_event(stream)
    assert (created.type, created.sandbox.sandbox_id) == (EventType.CREATED, short.sandbox_id)
    expired = await next_event(stream)  # the backend deletes at end-at itself
    # Its pod's watch events may still be arriving (readiness, endpoint): on a loaded machine
    # they can report the sandbox changed before it expires.
    while (expired.type, expired.sandbox.sandbox_id) == (EventType.UPDATED, short.sandbox_id):
        expired = await next_event(stream)
    assert (expired.type, expired.sandbox.sandbox_id) == (EventType.EXPIRED, short.sandbox_id)
    assert expired.sandbox.state is State.ENDED
    assert api.get("sandboxes", TENANT, f"e2b-{short.sandbox_id}") is None
    await backend.kill(existing.sandbox_id, TENANT)
    killed = await next_event(stream)
    # As above: its pod's deletion may be seen first, as a change.
    while (killed.type, killed.sandbox.sandbox_id) == (EventType.UPDATED, existing.sandbox_id):
        killed = await next_event(stream)
    assert (killed.type, killed.sandbox.sandbox_id) == (EventType.KILLED, existing.sandbox_id)
    revisions = [e.revision for e in (updated, created, expired, killed)]
    assert revisions == sorted(revisions) and len(set(revisions)) == 4
    await stream.aclose()


async def test_external_deletion_is_reported(api: FakeApi, backend: KubernetesBackend) -> None:
    sandbox = await backend.create(spec())
    stream = backend.watch()
    await next_event(stream)
    await next_event(stream)
    api.delete("sandboxes", TENANT, f"e2b-{sandbox.sandbox_id}")
    event = await next_event(stream)
    # The pod may go first (its watch event can overtake the Sandbox's): the sandbox is then
    # reported as changed (no endpoint) before it is reported gone.
    while event.type is EventType.UPDATED:
        event = await next_event(stream)
    assert (event.type, event.sandbox.sandbox_id) == (EventType.KILLED, sandbox.sandbox_id)
    await stream.aclose()


def kubeconfig(path: Path, url: str) -> Path:
    doc = {
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": url}}],
        "users": [{"name": "fake", "user": {"token": "t"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
    }  # fmt: skip
    path.write_text(json.dumps(doc))
    return path


async def test_grpc_statuses(
    api: FakeApi, kubelet: Any, picod: Picod, tmp_path: Path
) -> None:
    kube = settings(picod, kubeconfig=kubeconfig(tmp_path / "kubeconfig", api.url))
    config = LifecycleSettings(
        backend="kubernetes", server=ServerSettings(listen="127.0.0.1:0", grace_s=0.5),
        kubernetes=kube,
    )  # fmt: skip
    async with (
        serving(config) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        stub = pb_grpc.SandboxServiceStub(channel)
        created = await stub.CreateSandbox(
            pb.CreateSandboxRequest(tenant=TENANT, template_id=TEMPLATE, timeout_seconds=60)
        )
        sid = created.sandbox.sandbox_id
        assert created.sandbox.endpoint_host == "127.0.0.1"
        got = await stub.GetSandbox(pb.GetSandboxRequest(tenant=TENANT, sandbox_id=sid))
        assert got.sandbox.envd_access_token == created.sandbox.envd_access_token
        calls = [
            (stub.GetSandbox(pb.GetSandboxRequest(tenant=OTHER, sandbox_id=sid)),
             grpc.StatusCode.NOT_FOUND),
            (stub.CreateSandbox(pb.CreateSandboxRequest(tenant=TENANT, template_id="nope")),
             grpc.StatusCode.NOT_FOUND),
            (stub.PauseSandbox(pb.PauseSandboxRequest(tenant=TENANT, sandbox_id=sid)),
             grpc.StatusCode.UNIMPLEMENTED),
        ]  # fmt: skip
        for call, code in calls:
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await call
            assert error.value.code() is code
        await stub.KillSandbox(pb.KillSandboxRequest(tenant=TENANT, sandbox_id=sid))
        assert api.objects["sandboxes"] == {}
