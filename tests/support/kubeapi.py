"""A small, stateful Kubernetes API for tests, served by kmock over real HTTP.

kmock's own KubernetesEmulator serves a fixed `resourceVersion: "..."` and replays every
object as ADDED on each watch, which cannot express resume-from-resourceVersion, bookmarks
or 410. So the tests keep kmock's scaffold (HTTP server, URL parsing into resource,
namespace and action, Status-shaped errors, the request log) and register LIST and WATCH
reactions backed by this class: one global resourceVersion counter, an event history per
resource for resuming watches, compaction (older resourceVersions get 410), selectors and
`limit`/`continue` paging. The official client talks to it through urllib3 as to a cluster.

Writes (`install(..., writable=True)`): GET, POST (409 AlreadyExists), PATCH (JSON merge
patch, RFC 7386, for `application/merge-patch+json` and `application/json`; strategic merge
is treated as a merge patch too) and DELETE of any resource, CRD plurals included, each
producing the watch event a real API server would. Every write and GET is appended to
`log` (method, plural, namespace, name, content type, parsed body) so tests assert the
exact requests a component made. `listeners` are called after every change (a stand-in
kubelet reacts to Sandboxes there); `fail` makes the next requests of a method fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import kmock

Obj = dict[str, Any]
_KINDS = {
    "secrets": "Secret",
    "configmaps": "ConfigMap",
    "pods": "Pod",
    "sandboxes": "Sandbox",
    "sandboxclaims": "SandboxClaim",
    "codeinterpreters": "CodeInterpreter",
}
Listener = Callable[[str, str, "Obj"], None]


@dataclass(frozen=True)
class Logged:
    """One request as the fake API received it."""

    method: str  # GET, POST, PATCH, DELETE
    plural: str
    namespace: str | None
    name: str | None
    content_type: str
    body: Any


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge recursively, null deletes, the rest replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def gone_status(message: str = "too old resource version") -> Obj:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "Expired",
        "code": 410,
    }


def _matches(obj: Obj, namespace: str | None, params: dict[str, str]) -> bool:
    metadata = obj.get("metadata", {})
    if namespace is not None and metadata.get("namespace") != namespace:
        return False
    for term in filter(None, params.get("fieldSelector", "").split(",")):
        path, _, want = term.partition("=")
        if path == "metadata.name" and metadata.get("name") != want:
            return False
        if path == "metadata.namespace" and metadata.get("namespace") != want:
            return False
    labels = metadata.get("labels") or {}
    for term in filter(None, params.get("labelSelector", "").split(",")):
        key, eq, want = term.partition("=")
        if (eq and labels.get(key) != want) or (not eq and key not in labels):
            return False
    return True


@dataclass
class _Watcher:
    plural: str
    namespace: str | None
    params: dict[str, str]
    held: bool = False  # a lagging watch: open, but receives nothing until it is ended
    queue: asyncio.Queue[Obj | None] = field(default_factory=asyncio.Queue)


class FakeApi:
    def __init__(self, handler: kmock.KubernetesScaffold) -> None:
        self.handler = handler
        self.rv = 100
        self.objects: dict[str, dict[tuple[str, str], Obj]] = {}
        self.history: dict[str, list[tuple[int, Obj]]] = {}
        self.compacted_below: dict[str, int] = {}
        self.failing: dict[str, int] = {}  # plural -> HTTP status every LIST gets
        self.watchers: list[_Watcher] = []
        # resourceVersion -> perf_counter() just before the event was written to a stream.
        self.served_at: dict[int, float] = {}
        self.server: kmock.Server | None = None
        self.port: int | None = None
        self.log: list[Logged] = []
        self.listeners: list[Listener] = []
        # (method, plural) -> HTTP statuses the next requests get, one per request.
        self.failures: dict[tuple[str, str], list[int]] = {}
        self.api_versions: dict[str, str] = {}
        self._uid = 0

    # -- serving -------------------------------------------------------------------------
    def install(
        self, *plurals: str, group: str = "", version: str = "v1", writable: bool = False
    ) -> None:
        for plural in plurals:
            self.objects.setdefault(plural, {})
            self.history.setdefault(plural, [])
            self.compacted_below.setdefault(plural, 0)
            self.api_versions[plural] = f"{group}/{version}" if group else version
            resource = kmock.resource(group=group, version=version, plural=plural)
            self.handler[kmock.action.LIST, resource] << self._list_reaction(plural)
            self.handler[kmock.action.WATCH, resource] << self._watch_reaction(plural)
            if writable:
                self.handler[kmock.action.FETCH, resource] << self._get_reaction(plural)
                self.handler[kmock.action.CREATE, resource] << self._create_reaction(plural)
                self.handler[kmock.action.UPDATE, resource] << self._patch_reaction(plural)
                self.handler[kmock.action.DELETE, resource] << self._delete_reaction(plural)

    def fail(self, method: str, plural: str, *statuses: int) -> None:
        """The next len(statuses) `method` requests on `plural` get these HTTP statuses."""
        self.failures.setdefault((method, plural), []).extend(statuses)

    def writes(self, plural: str | None = None) -> list[Logged]:
        """POST, PATCH and DELETE requests, in order (of one plural if given)."""
        return [
            entry
            for entry in self.log
            if entry.method != "GET" and (plural is None or entry.plural == plural)
        ]

    def get(self, plural: str, namespace: str, name: str) -> Obj | None:
        obj = self.objects[plural].get((namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def _logged(self, method: str, plural: str, request: kmock.Request) -> None:
        content_type = str(request.headers.get("Content-Type", "")).split(";")[0]
        body: Any = None
        if request.body:
            try:
                body = json.loads(request.body)
            except ValueError:
                body = request.body
        self.log.append(Logged(method, plural, request.namespace, request.name, content_type, body))
        statuses = self.failures.get((method, plural))
        if statuses:
            status = statuses.pop(0)
            raise kmock.KubernetesError(status=status, reason="InjectedFailure")

    def _missing(self, plural: str, name: str | None) -> kmock.KubernetesError:
        return kmock.KubernetesError(
            status=404, reason="NotFound", message=f'{plural} "{name}" not found'
        )

    def _get_reaction(self, plural: str) -> Callable[[kmock.Request], Any]:
        def serve(request: kmock.Request) -> Any:
            self._logged("GET", plural, request)
            obj = self.objects[plural].get((request.namespace or "", request.name or ""))
            if obj is None:
                raise self._missing(plural, request.name)
            return copy.deepcopy(obj)

        return serve

    def _create_reaction(self, plural: str) -> Callable[[kmock.Request], Any]:
        def serve(request: kmock.Request) -> Any:
            self._logged("POST", plural, request)
            obj = json.loads(request.body)
            metadata = obj.setdefault("metadata", {})
            if request.namespace:
                metadata["namespace"] = request.namespace
            key = (metadata.get("namespace", ""), metadata.get("name", ""))
            if key in self.objects[plural]:
                raise kmock.KubernetesError(
                    status=409, reason="AlreadyExists",
                    message=f'{plural} "{key[1]}" already exists',
                )  # fmt: skip
            self._uid += 1
            metadata.setdefault("uid", f"uid-{self._uid:08d}")
            metadata.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
            self.put(plural, obj)
            return copy.deepcopy(self.objects[plural][key])

        return serve

    def _patch_reaction(self, plural: str) -> Callable[[kmock.Request], Any]:
        def serve(request: kmock.Request) -> Any:
            self._logged("PATCH", plural, request)
            key = (request.namespace or "", request.name or "")
            current = self.objects[plural].get(key)
            if current is None:
                raise self._missing(plural, request.name)
            patched = merge_patch(current, json.loads(request.body))
            self.put(plural, patched)
            return copy.deepcopy(self.objects[plural][key])

        return serve

    def _delete_reaction(self, plural: str) -> Callable[[kmock.Request], Any]:
        def serve(request: kmock.Request) -> Any:
            self._logged("DELETE", plural, request)
            key = (request.namespace or "", request.name or "")
            if key not in self.objects[plural]:
                raise self._missing(plural, request.name)
            obj = copy.deepcopy(self.objects[plural][key])
            self.delete(plural, *key)
            return obj

        return serve

    async def start(self) -> None:
        self.server = kmock.Server(self.handler, port=self.port)  # None: any free port
        await self.server.__aenter__()
        self.port = self.server.port

    async def stop(self) -> None:
        """Stop listening (connections are refused) and end the open watches."""
        for watcher in list(self.watchers):
            watcher.queue.put_nowait(None)
        assert self.server is not None
        server, self.server = self.server, None
        await server.__aexit__(None, None, None)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self, action: kmock.action, plural: str) -> list[kmock.Request]:
        resource = kmock.resource(group="", version="v1", plural=plural)
        return list(self.handler[action, resource])

    def _list_reaction(self, plural: str) -> Callable[[kmock.Request], Any]:
        def serve(request: kmock.Request) -> Any:
            if plural in self.failing:
                raise kmock.KubernetesError(status=self.failing[plural], reason="Forbidden")
            params = dict(request.params)
            items = [
                obj
                for _, obj in sorted(self.objects[plural].items())
                if _matches(obj, request.namespace, params)
            ]
            start = int(request.params.get("continue") or 0)
            limit = int(request.params.get("limit") or 0) or len(items) or 1
            page = [copy.deepcopy(obj) for obj in items[start : start + limit]]
            metadata: Obj = {"resourceVersion": str(self.rv)}
            if start + limit < len(items):
                metadata["continue"] = str(start + limit)
            kind = _KINDS.get(plural, "Object") + "List"
            api_version = self.api_versions.get(plural, "v1")
            return {"kind": kind, "apiVersion": api_version, "metadata": metadata, "items": page}

        return serve

    def _watch_reaction(self, plural: str) -> Callable[[kmock.Request], Any]:
        def serve(request: kmock.Request) -> Any:
            since = int(request.params.get("resourceVersion") or 0)
            if since < self.compacted_below[plural]:
                # Raised, not returned as kmock.Response: a returned Response's status sticks
                # to the reaction in kmock 0.8 and every later watch would get 410 too.
                raise kmock.KubernetesError(
                    status=410, reason="Expired", message="too old resource version"
                )
            watcher = _Watcher(plural, request.namespace, dict(request.params))
            return self._stream(watcher, since)

        return serve

    async def _stream(self, watcher: _Watcher, since: int) -> AsyncIterator[Any]:
        # Runs at the first anext(): backlog and registration happen with no await between.
        backlog = [
            event
            for rv, event in self.history[watcher.plural]
            if rv > since and self._wants(watcher, event)
        ]
        self.watchers.append(watcher)
        try:
            yield b""  # send the headers now, as the API server does
            for event in backlog:
                yield event
            while (event := await watcher.queue.get()) is not None:
                rv = int(event["object"].get("metadata", {}).get("resourceVersion") or 0)
                self.served_at[rv] = time.perf_counter()
                yield event
        finally:
            self.watchers.remove(watcher)

    def _wants(self, watcher: _Watcher, event: Obj) -> bool:
        if event["type"] in ("BOOKMARK", "ERROR"):
            return True
        return _matches(event["object"], watcher.namespace, watcher.params)

    def _broadcast(self, plural: str, event: Obj) -> None:
        for watcher in self.watchers:
            if watcher.plural == plural and not watcher.held and self._wants(watcher, event):
                watcher.queue.put_nowait(copy.deepcopy(event))

    # -- changing state ------------------------------------------------------------------
    def put(self, plural: str, obj: Obj) -> int:
        """Create or replace an object; returns its new resourceVersion."""
        obj = copy.deepcopy(obj)
        metadata = obj.setdefault("metadata", {})
        key = (metadata.get("namespace", ""), metadata["name"])
        self.rv += 1
        metadata["resourceVersion"] = str(self.rv)
        kind = "MODIFIED" if key in self.objects[plural] else "ADDED"
        self.objects[plural][key] = obj
        self._record(plural, {"type": kind, "object": obj})
        return self.rv

    def delete(self, plural: str, namespace: str, name: str) -> int:
        obj = self.objects[plural].pop((namespace, name))
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self._record(plural, {"type": "DELETED", "object": obj})
        return self.rv

    def bookmark(self, plural: str) -> int:
        """Other resources moved on; open watches learn the new resourceVersion."""
        self.rv += 1
        event = {
            "type": "BOOKMARK",
            "object": {"kind": _KINDS.get(plural), "metadata": {"resourceVersion": str(self.rv)}},
        }
        self._broadcast(plural, event)
        return self.rv

    def _record(self, plural: str, event: Obj) -> None:
        self.history[plural].append((self.rv, copy.deepcopy(event)))
        self._broadcast(plural, event)
        for listener in list(self.listeners):
            listener(plural, event["type"], copy.deepcopy(event["object"]))

    def hold_watches(self, plural: str) -> None:
        """Open watches stop receiving events (they stay open until ended or expired)."""
        for watcher in self.watchers:
            if watcher.plural == plural:
                watcher.held = True

    def compact(self, plural: str) -> None:
        """Forget history: a watch from any resourceVersion seen so far gets 410."""
        self.compacted_below[plural] = self.rv + 1
        self.history[plural].clear()

    def expire_with_error_event(self, plural: str) -> None:
        """Compact, then end open watches with an ERROR event carrying a 410 Status."""
        self.compact(plural)
        for watcher in self.watchers:
            if watcher.plural == plural:
                watcher.queue.put_nowait({"type": "ERROR", "object": gone_status()})
                watcher.queue.put_nowait(None)

    def end_watches(self, plural: str) -> None:
        """End open watches cleanly, as the API server does at timeoutSeconds."""
        for watcher in self.watchers:
            if watcher.plural == plural:
                watcher.queue.put_nowait(None)


@contextlib.asynccontextmanager
async def served(setup: Callable[[FakeApi], None]) -> AsyncIterator[FakeApi]:
    """A FakeApi listening on a free port once `setup` has installed its resources and put
    its objects; stopped on exit unless the test already stopped it."""
    async with kmock.KubernetesScaffold() as handler:
        fake = FakeApi(handler)
        setup(fake)
        await fake.start()
        try:
            yield fake
        finally:
            if fake.server is not None:
                await fake.stop()
