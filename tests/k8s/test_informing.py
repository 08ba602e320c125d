"""The generic informer against kmock, through the official client's real HTTP requests."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import kmock
from kubernetes.client import ApiClient, CoreV1Api

from extproc.core.backoff import Backoff
from extproc.k8s.informing import Informer
from extproc.k8s.listwatch import KubeObject, WatchTarget, field_selector_for_name
from extproc.k8s.settings import InformerSettings
from support.kubeapi import FakeApi

from .conftest import FAST, WAIT_S, Runner

NS = "agentcube-system"


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    def on_add(self, obj: KubeObject) -> None:
        self.calls.append(("add", obj["metadata"]["name"], _data(obj)))

    def on_update(self, old: KubeObject, new: KubeObject) -> None:
        assert old["metadata"]["name"] == new["metadata"]["name"]
        self.calls.append(("update", new["metadata"]["name"], _data(new)))

    def on_delete(self, obj: KubeObject) -> None:
        self.calls.append(("delete", obj["metadata"]["name"], _data(obj)))


def _data(obj: KubeObject) -> str:
    return str((obj.get("data") or {}).get("v", ""))


def config_map(name: str, value: str, **labels: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": NS}
    if labels:
        metadata["labels"] = labels
    return {"kind": "ConfigMap", "apiVersion": "v1", "metadata": metadata, "data": {"v": value}}


def informer(
    client: ApiClient,
    *handlers: Recorder,
    settings: InformerSettings = FAST,
    field_selector: str | None = None,
    label_selector: str | None = None,
) -> Informer:
    target = WatchTarget(
        name="configmaps",
        list_call=functools.partial(CoreV1Api(client).list_namespaced_config_map, NS),
        field_selector=field_selector,
        label_selector=label_selector,
    )
    return Informer(target, settings, handlers)


async def until(inf: Informer, predicate: Any) -> None:
    async with asyncio.timeout(WAIT_S):
        await inf.wait_for(predicate)


async def test_initial_list_fills_the_store_and_marks_synced(
    api: FakeApi, client: ApiClient, run: Runner
) -> None:
    api.put("configmaps", config_map("a", "1"))
    list_rv = api.put("configmaps", config_map("b", "2"))
    recorder = Recorder()
    inf = informer(client, recorder)
    run(inf.run())
    async with asyncio.timeout(WAIT_S):
        await inf.synced.wait()

    assert sorted(inf.store) == [f"{NS}/a", f"{NS}/b"]
    assert sorted(recorder.calls) == [("add", "a", "1"), ("add", "b", "2")]
    status = inf.status
    assert status.synced and status.connected and status.last_error is None
    assert status.resource_version == str(list_rv)
    assert status.last_sync_at is not None and status.relists == 0


async def test_watch_add_modify_delete_reach_store_and_handlers(
    api: FakeApi, client: ApiClient, run: Runner
) -> None:
    list_rv = api.put("configmaps", config_map("a", "1"))
    recorder = Recorder()
    inf = informer(client, recorder)
    run(inf.run())
    await until(inf, lambda i: i.status.connected and i.status.synced)
    await until(inf, lambda i: len(api.watchers) == 1)

    api.put("configmaps", config_map("b", "2"))
    api.put("configmaps", config_map("a", "1b"))
    last = api.delete("configmaps", NS, "b")
    await until(inf, lambda i: i.status.resource_version == str(last))

    assert list(inf.store) == [f"{NS}/a"]
    assert inf.store[f"{NS}/a"]["data"] == {"v": "1b"}
    assert recorder.calls == [
        ("add", "a", "1"),
        ("add", "b", "2"),
        ("update", "a", "1b"),
        ("delete", "b", "2"),
    ]
    assert inf.status.events == 3
    (watch,) = api.requests(kmock.action.WATCH, "configmaps")
    assert watch.params["resourceVersion"] == str(list_rv)
    assert watch.params["allowWatchBookmarks"] == "true"
    assert watch.params["timeoutSeconds"] == str(FAST.watch_timeout_s)


async def test_bookmark_advances_the_resource_version_for_the_next_watch(
    api: FakeApi, client: ApiClient, run: Runner
) -> None:
    api.put("configmaps", config_map("a", "1"))
    recorder = Recorder()
    inf = informer(client, recorder)
    run(inf.run())
    await until(inf, lambda i: i.status.synced and len(api.watchers) == 1)

    mark = api.bookmark("configmaps")
    await until(inf, lambda i: i.status.resource_version == str(mark))
    api.end_watches("configmaps")  # the server's timeoutSeconds: resume, do not relist
    await until(inf, lambda i: len(api.requests(kmock.action.WATCH, "configmaps")) == 2)

    assert api.requests(kmock.action.WATCH, "configmaps")[1].params["resourceVersion"] == str(mark)
    assert len(api.requests(kmock.action.LIST, "configmaps")) == 1
    assert recorder.calls == [("add", "a", "1")] and inf.status.events == 0


def _changes_while_expired(api: FakeApi) -> None:
    api.put("configmaps", config_map("a", "1b"))
    api.delete("configmaps", NS, "b")
    api.put("configmaps", config_map("c", "3"))


async def test_410_as_an_error_event_relists_and_diffs(
    api: FakeApi, client: ApiClient, run: Runner
) -> None:
    api.put("configmaps", config_map("a", "1"))
    api.put("configmaps", config_map("b", "2"))
    recorder = Recorder()
    inf = informer(client, recorder)
    run(inf.run())
    await until(inf, lambda i: i.status.synced and len(api.watchers) == 1)
    # A 410 with nothing changed meanwhile: a relist that calls no handler.
    api.watchers[0].queue.put_nowait({"type": "ERROR", "object": {"code": 410, "message": "x"}})
    api.watchers[0].queue.put_nowait(None)
    await until(inf, lambda i: i.status.relists == 1)
    assert sorted(inf.store) == [f"{NS}/a", f"{NS}/b"]  # nothing changed meanwhile

    await until(inf, lambda i: len(api.watchers) == 1)
    api.hold_watches("configmaps")  # the changes reach the informer only through the relist
    _changes_while_expired(api)
    api.expire_with_error_event("configmaps")
    await until(inf, lambda i: i.status.relists == 2)

    assert sorted(inf.store) == [f"{NS}/a", f"{NS}/c"]
    assert sorted(recorder.calls[2:]) == [
        ("add", "c", "3"),
        ("delete", "b", "2"),
        ("update", "a", "1b"),
    ]
    assert len(api.requests(kmock.action.LIST, "configmaps")) == 3


async def test_410_as_an_http_status_relists(api: FakeApi, client: ApiClient, run: Runner) -> None:
    api.put("configmaps", config_map("a", "1"))
    api.put("configmaps", config_map("b", "2"))
    recorder = Recorder()
    inf = informer(client, recorder)
    run(inf.run())
    await until(inf, lambda i: i.status.synced and len(api.watchers) == 1)
    stale = inf.status.resource_version

    api.watchers[0].queue.put_nowait(None)  # the stream ends: the informer resumes from `stale`
    api.compact("configmaps")
    _changes_while_expired(api)
    await until(inf, lambda i: i.status.relists == 1)

    watches = api.requests(kmock.action.WATCH, "configmaps")
    assert watches[1].params["resourceVersion"] == stale  # answered 410
    assert sorted(inf.store) == [f"{NS}/a", f"{NS}/c"]
    assert sorted(recorder.calls[2:]) == [
        ("add", "c", "3"),
        ("delete", "b", "2"),
        ("update", "a", "1b"),
    ]


async def test_unreachable_api_keeps_the_cache_and_recovers(
    api: FakeApi, client: ApiClient, run: Runner
) -> None:
    api.put("configmaps", config_map("a", "1"))
    recorder = Recorder()
    inf = informer(client, recorder)
    run(inf.run())
    await until(inf, lambda i: i.status.synced and len(api.watchers) == 1)
    synced_at = inf.status.last_sync_at

    await api.stop()  # connection refused from now on
    await until(inf, lambda i: not i.status.connected and i.status.last_error is not None)
    assert dict(inf.store).keys() == {f"{NS}/a"}
    assert inf.status.synced and inf.status.last_sync_at == synced_at
    assert inf.status.last_error is not None
    assert "refused" in inf.status.last_error.lower() or "Error" in inf.status.last_error
    lists_before = len(api.requests(kmock.action.LIST, "configmaps"))

    changed = api.put("configmaps", config_map("a", "2"))  # happens while we are away
    await api.start()  # same port
    await until(inf, lambda i: i.status.connected and i.status.resource_version == str(changed))

    assert inf.status.last_error is None
    assert inf.store[f"{NS}/a"]["data"] == {"v": "2"}
    assert recorder.calls == [("add", "a", "1"), ("update", "a", "2")]
    # Resumed from the kept resourceVersion: no relist was needed.
    assert len(api.requests(kmock.action.LIST, "configmaps")) == lists_before
    assert inf.status.relists == 0


async def test_field_and_label_selectors_are_sent_and_honoured(
    api: FakeApi, client: ApiClient, run: Runner
) -> None:
    api.put("configmaps", config_map("wanted", "1", app="e2b"))
    api.put("configmaps", config_map("other", "2", app="e2b"))
    api.put("configmaps", config_map("wanted-unlabelled", "3"))
    inf = informer(
        client, field_selector=field_selector_for_name("wanted"), label_selector="app=e2b"
    )
    run(inf.run())
    await until(inf, lambda i: i.status.synced and len(api.watchers) == 1)
    api.put("configmaps", config_map("other", "4", app="e2b"))
    last = api.put("configmaps", config_map("wanted", "5", app="e2b"))
    await until(inf, lambda i: i.status.resource_version == str(last))

    assert list(inf.store) == [f"{NS}/wanted"]
    for action in (kmock.action.LIST, kmock.action.WATCH):
        (request,) = api.requests(action, "configmaps")
        assert request.params["fieldSelector"] == "metadata.name=wanted"
        assert request.params["labelSelector"] == "app=e2b"
        assert request.namespace == NS


async def test_list_pages_with_continue_tokens(
    api: FakeApi, client: ApiClient, run: Runner
) -> None:
    for n in range(5):
        api.put("configmaps", config_map(f"m{n}", str(n)))
    inf = informer(
        client,
        settings=InformerSettings(
            page_size=2, backoff=Backoff(initial_s=0.02, max_s=30.0, jitter=0.5)
        ),
    )
    run(inf.run())
    async with asyncio.timeout(WAIT_S):
        await inf.synced.wait()

    assert len(inf.store) == 5
    lists = api.requests(kmock.action.LIST, "configmaps")
    assert [r.params.get("continue") for r in lists] == [None, "2", "4"]
    assert all(r.params["limit"] == "2" for r in lists)


async def test_a_failing_handler_does_not_stop_the_informer(
    api: FakeApi, client: ApiClient, run: Runner
) -> None:
    class Broken(Recorder):
        def on_add(self, obj: KubeObject) -> None:
            raise RuntimeError("boom")

    recorder = Recorder()
    inf = informer(client, Broken(), recorder)
    run(inf.run())
    await until(inf, lambda i: i.status.synced and len(api.watchers) == 1)
    last = api.put("configmaps", config_map("a", "1"))
    await until(inf, lambda i: i.status.resource_version == str(last))
    assert recorder.calls == [("add", "a", "1")]


async def test_forbidden_list_retries_with_backoff_and_reports_it(
    api: FakeApi, client: ApiClient, run: Runner
) -> None:
    api.failing["configmaps"] = 403
    inf = informer(client)
    run(inf.run())
    await until(inf, lambda i: len(api.requests(kmock.action.LIST, "configmaps")) >= 3)
    assert inf.status.last_error == "HTTP 403 Forbidden"
    assert not inf.status.connected and not inf.status.synced

    del api.failing["configmaps"]
    await until(inf, lambda i: i.status.synced and i.status.connected)
    assert inf.status.last_error is None


def test_backoff_is_exponential_bounded_and_jittered() -> None:
    settings = InformerSettings(backoff=Backoff(initial_s=1.0, max_s=8.0, jitter=0.5))
    draws = iter([0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.5])
    inf = Informer(
        WatchTarget(name="x", list_call=lambda **_: None), settings, rng=lambda: next(draws)
    )
    delays = [inf._next_delay() for _ in range(7)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0, 4.0, 6.0]
