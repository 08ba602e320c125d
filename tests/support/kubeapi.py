"""A small, stateful Kubernetes API for tests, served by kmock over real HTTP, as strict as a
real API server where our code could go wrong.

kmock's own KubernetesEmulator serves a fixed `resourceVersion: "..."` and replays every
object as ADDED on each watch, which cannot express resume-from-resourceVersion, bookmarks
or 410. So the tests keep kmock's scaffold (HTTP server, URL parsing into resource,
namespace, name and subresource, Status-shaped errors) and register reactions backed by this
class: one global resourceVersion counter, an event history per resource for resuming
watches, compaction (older resourceVersions get 410), selectors and `limit`/`continue`
paging. The official client talks to it through urllib3 as to a cluster.

Two ways to serve a resource (kube_resources.py):
- `install_crd(crd)`: a CustomResourceDefinition (tests/support/crds/) as the API server
  serves one. Every served version is an endpoint; objects are stored once, in the storage
  version, and converted on the way in and out (kube_conversion.py). Every create and patch is
  checked as the server does (kube_admission.py): apiVersion/kind, unknown fields (400 with
  `fieldValidation=Strict`, else pruned with a `Warning` header), defaults, the schema (422
  Invalid with `details.causes`), ObjectMeta. The status subresource is honoured: the main
  resource ignores `.status`, `.../status` writes only it. `metadata.generation` moves with
  the spec. Reads prune and default too, so what a fake controller `put` reads back as the
  server would show it. A deprecated version's responses carry its deprecation Warning.
- `install(plural, ...)`: the older, lenient endpoints (no schema, any patch type as a merge
  patch), for the tests that predate the CRDs. Writes still get ObjectMeta's checks, and
  Secrets, ConfigMaps and Pods the checks of theirs that matter to us.

Writes are GET, POST (201; 409 AlreadyExists), PATCH (JSON merge patch, RFC 7386; JSON
patch, RFC 6902, on CRDs) and DELETE, each producing the watch event a real server would;
a patch that changes nothing produces none. Deleting an object (over HTTP or with
`delete`) deletes, recursively, every object whose ownerReferences name its uid and no
other live owner (background propagation; no finalizers). Discovery (`/api`, `/api/v1`,
`/apis`, `/apis/{group}`, `/apis/{group}/{version}`) lists what is installed, with the
storage version preferred. Every write and GET is appended to `log` (method, plural,
namespace, name, content type, parsed body, query params) so tests assert the exact requests
a component made. `listeners` are called after every change with storage-version objects (the
fake controllers react there); `fail` makes the next requests of a method fail. `put`,
`put_status` and `delete` are the in-process writes of those controllers: no schema checks,
but uid, creationTimestamp, generation and resourceVersion are managed as for HTTP writes.

Not served: PUT (replace), server-side apply, deletecollection, finalizers.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kmock

from . import kube_resources
from .kube_admission import admit, apply_patch, bad_request, failure, merge_patch, view
from .kube_resources import KINDS, Resource, builtin_resource, crd_resource

__all__ = ["FakeApi", "Listener", "Logged", "Obj", "gone_status", "merge_patch", "served"]

Obj = dict[str, Any]
Listener = Callable[[str, str, "Obj"], None]
_GENERATED_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the server's, without vowels


@dataclass(frozen=True)
class Logged:
    """One request as the fake API received it."""

    method: str  # GET, POST, PATCH, DELETE
    plural: str
    namespace: str | None
    name: str | None
    content_type: str
    body: Any
    params: dict[str, str] = field(default_factory=dict)  # the query, e.g. fieldValidation
    api_version: str = ""  # as requested, e.g. agents.x-k8s.io/v1beta1
    subresource: str | None = None  # "status" for .../{name}/status


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


def _selector_terms(selector: str) -> list[str]:
    """Split a selector on the commas outside `in (a,b)` sets."""
    terms, depth, start = [], 0, 0
    for index, char in enumerate(selector):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            terms.append(selector[start:index])
            start = index + 1
    terms.append(selector[start:])
    return [term.strip() for term in terms if term.strip()]


_SET_TERM = re.compile(r"([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)")


def _term_matches(values: dict[str, Any], term: str) -> bool:
    """One selector term (`k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a)`)."""
    if (match := _SET_TERM.fullmatch(term)) is not None:
        key, operator, options = match.groups()
        inside = values.get(key) in {option.strip() for option in options.split(",")}
        return inside if operator == "in" else not inside
    if term.startswith("!"):
        return term[1:].strip() not in values
    for operator in ("!=", "==", "="):
        if operator in term:
            key, _, want = term.partition(operator)
            equal = values.get(key.strip()) == want.strip()
            return not equal if operator == "!=" else equal
    return term in values


def _matches(obj: Obj, namespace: str | None, params: dict[str, str]) -> bool:
    metadata = obj.get("metadata", {})
    if namespace is not None and metadata.get("namespace") != namespace:
        return False
    fields = {
        "metadata.name": metadata.get("name"),
        "metadata.namespace": metadata.get("namespace"),
    }
    for term in _selector_terms(params.get("fieldSelector", "")):
        path = re.split("!=|==|=", term)[0].strip()
        if path in fields and not _term_matches(fields, term):
            return False
    labels = metadata.get("labels") or {}
    terms = _selector_terms(params.get("labelSelector", ""))
    return all(_term_matches(labels, term) for term in terms)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _warning_header(warnings: Iterable[str]) -> str | None:
    """RFC 7234 warn-values, as the API server sends them (code 299, agent `-`)."""
    values = []
    for text in warnings:
        escaped = text.replace("\\", "\\\\").replace('"', '\\"')
        values.append(f'299 - "{escaped}"')
    return ", ".join(values) or None


@dataclass
class _Watcher:
    plural: str
    namespace: str | None
    params: dict[str, str]
    held: bool = False  # a lagging watch: open, but receives nothing until it is ended
    queue: asyncio.Queue[Obj | None] = field(default_factory=asyncio.Queue)
    version: str = ""  # the API version its events are served in


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
        self.api_versions: dict[str, str] = {}  # plural -> its storage apiVersion
        self.resources: dict[str, Resource] = {}
        self.crds: dict[str, Obj] = {}  # CRD name -> the installed CRD
        self._owners: dict[str, tuple[str, tuple[str, str]]] = {}  # uid -> (plural, key)
        # Discovery; the official client asks for `/apis/` and `/api/` with the slash.
        get = kmock.method.GET
        handler[get, re.compile(r"/api/?")] << (lambda: kube_resources.core_versions(self.port))
        handler[get, re.compile(r"/apis/?")] << (
            lambda: kube_resources.group_list(self.resources.values())
        )
        handler[get, re.compile(r"/apis/[^/]+/?")] << self._serve_group
        resource_list = re.compile(r"/apis/[^/]+/[^/]+/?|/api/[^/]+/?")
        handler[get, resource_list] << self._serve_resource_list

    # -- serving -------------------------------------------------------------------------
    def install(
        self, *plurals: str, group: str = "", version: str = "v1", writable: bool = False
    ) -> None:
        """Lenient endpoints for `plurals` (no schema, see the module docstring)."""
        for plural in plurals:
            existing = self.resources.get(plural)
            if existing is not None and existing.crd:
                raise ValueError(f"{plural} is already served from a CRD")
            was_writable = existing is not None and existing.writable
            self._register(builtin_resource(plural, group, version, writable or was_writable))
            self._route(plural, version, writable)

    def install_crd(self, crd: Obj) -> None:
        """Serve every served version of a CustomResourceDefinition (apiextensions.k8s.io/v1,
        namespaced, structural schemas), writable."""
        resource = crd_resource(crd)
        if resource.plural in self.resources:
            raise ValueError(f"{resource.plural} is already served")
        self._register(resource)
        self.crds[crd["metadata"]["name"]] = copy.deepcopy(crd)
        for version in resource.served:
            self._route(resource.plural, version, writable=True)

    def _register(self, resource: Resource) -> None:
        self.resources[resource.plural] = resource
        self.objects.setdefault(resource.plural, {})
        self.history.setdefault(resource.plural, [])
        self.compacted_below.setdefault(resource.plural, 0)
        self.api_versions[resource.plural] = resource.api_version(resource.storage)

    def _route(self, plural: str, version: str, writable: bool) -> None:
        group = self.resources[plural].group
        resource = kmock.resource(group=group, version=version, plural=plural)
        self.handler[kmock.action.LIST, resource] << self._list_reaction(plural, version)
        self.handler[kmock.action.WATCH, resource] << self._watch_reaction(plural, version)
        if writable:
            self.handler[kmock.action.FETCH, resource] << self._get_reaction(plural, version)
            self.handler[kmock.action.CREATE, resource] << self._create_reaction(plural, version)
            self.handler[kmock.action.UPDATE, resource] << self._patch_reaction(plural, version)
            self.handler[kmock.action.DELETE, resource] << self._delete_reaction(plural, version)

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

    def _logged(self, method: str, plural: str, version: str, request: kmock.Request) -> None:
        content_type = str(request.headers.get("Content-Type", "")).split(";")[0].strip()
        body: Any = None
        if request.body:
            try:
                body = json.loads(request.body)
            except ValueError:
                body = request.body
        self.log.append(Logged(
            method, plural, request.namespace, request.name, content_type, body,
            dict(request.params), self.resources[plural].api_version(version),
            request.subresource,
        ))  # fmt: skip
        statuses = self.failures.get((method, plural))
        if statuses:
            status = statuses.pop(0)
            raise kmock.KubernetesError(status=status, reason="InjectedFailure")

    def _missing(self, plural: str, name: str | None) -> kmock.KubernetesError:
        qualified = self.resources[plural].qualified_plural
        return failure(404, "NotFound", f'{qualified} "{name}" not found', name=name, kind=plural)

    def _subresource(self, resource: Resource, request: kmock.Request) -> bool:
        """True for `.../status` (when the resource has it); 404 for any other subresource."""
        if request.subresource is None:
            return False
        if request.subresource == "status" and resource.status_subresource:
            return True
        message = f"the server could not find the requested resource ({request.subresource})"
        raise failure(404, "NotFound", message)

    def _respond(
        self,
        resource: Resource,
        version: str,
        status: int,
        payload: Any,
        warnings: Iterable[str] = (),
    ) -> Any:
        # Every header is named on every response: kmock keeps a returned Response's status
        # and headers on the reaction, so a Warning would otherwise stick to later responses.
        texts = [*warnings]
        if version in resource.deprecations:
            texts.insert(0, resource.deprecations[version])
        return kmock.Response(  # type: ignore[attr-defined]  # exported, not in __all__
            status=status, payload=payload, headers={"Warning": _warning_header(texts)}
        )

    def _get_reaction(self, plural: str, version: str) -> Callable[[kmock.Request], Any]:
        resource = self.resources[plural]

        def serve(request: kmock.Request) -> Any:
            self._logged("GET", plural, version, request)
            self._subresource(resource, request)
            obj = self.objects[plural].get((request.namespace or "", request.name or ""))
            if obj is None:
                raise self._missing(plural, request.name)
            return self._respond(resource, version, 200, view(resource, version, obj))

        return serve

    def _create_reaction(self, plural: str, version: str) -> Callable[[kmock.Request], Any]:
        resource = self.resources[plural]

        def serve(request: kmock.Request) -> Any:
            self._logged("POST", plural, version, request)
            if request.subresource is not None:
                raise failure(405, "MethodNotAllowed", "the server does not allow this method")
            obj = self._json_object(request)
            metadata = obj.get("metadata")
            if (
                isinstance(metadata, dict)
                and metadata.get("generateName")
                and not metadata.get("name")
            ):
                suffix = "".join(secrets.choice(_GENERATED_NAME_ALPHABET) for _ in range(5))
                metadata["name"] = f"{metadata['generateName']}{suffix}"
            url = (request.namespace or "", None)
            stored, warnings = admit(resource, version, url, request.params, obj, None)
            key = (stored["metadata"].get("namespace", ""), stored["metadata"]["name"])
            if key in self.objects[plural]:
                message = f'{resource.qualified_plural} "{key[1]}" already exists'
                raise failure(409, "AlreadyExists", message, name=key[1], kind=plural)
            if "dryRun" not in request.params:
                self.put(plural, stored)
                stored = self.objects[plural][key]
            return self._respond(resource, version, 201, view(resource, version, stored), warnings)

        return serve

    def _patch_reaction(self, plural: str, version: str) -> Callable[[kmock.Request], Any]:
        resource = self.resources[plural]

        def serve(request: kmock.Request) -> Any:
            self._logged("PATCH", plural, version, request)
            status_only = self._subresource(resource, request)
            key = (request.namespace or "", request.name or "")
            current = self.objects[plural].get(key)
            if current is None:
                raise self._missing(plural, request.name)
            content_type = str(request.headers.get("Content-Type", "")).split(";")[0].strip()
            patched = apply_patch(
                resource, content_type, request.body, view(resource, version, current)
            )
            given = patched.get("metadata", {}).get("resourceVersion")
            if given is not None and given != current["metadata"].get("resourceVersion"):
                message = (
                    f'Operation cannot be fulfilled on {resource.qualified_plural} "{key[1]}": '
                    "the object has been modified; please apply your changes to the latest "
                    "version and try again"
                )
                raise failure(409, "Conflict", message, name=key[1], kind=plural)
            stored, warnings = admit(
                resource, version, key, request.params, patched, current, status_only
            )
            if "dryRun" not in request.params and not _same(stored, current):
                self.put(plural, stored)
            result = stored if "dryRun" in request.params else self.objects[plural][key]
            return self._respond(resource, version, 200, view(resource, version, result), warnings)

        return serve

    def _delete_reaction(self, plural: str, version: str) -> Callable[[kmock.Request], Any]:
        resource = self.resources[plural]

        def serve(request: kmock.Request) -> Any:
            self._logged("DELETE", plural, version, request)
            if self._subresource(resource, request):
                raise failure(405, "MethodNotAllowed", "the server does not allow this method")
            key = (request.namespace or "", request.name or "")
            if key not in self.objects[plural]:
                raise self._missing(plural, request.name)
            deleted = view(resource, version, self.objects[plural][key])
            options = request.data if isinstance(request.data, dict) else {}
            policy = request.params.get("propagationPolicy") or options.get("propagationPolicy")
            if "dryRun" not in request.params:
                self.delete(plural, *key, orphan=policy == "Orphan")
            return self._respond(resource, version, 200, deleted)

        return serve

    def _json_object(self, request: kmock.Request) -> Obj:
        try:
            obj = json.loads(request.body)
        except ValueError:
            raise bad_request("the body of the request could not be decoded as JSON") from None
        if not isinstance(obj, dict):
            raise bad_request("the body of the request must be a JSON object")
        return obj

    # -- discovery -----------------------------------------------------------------------
    def _serve_group(self, request: kmock.Request) -> Obj:
        name = request.url.path.strip("/").split("/")[1]
        document = kube_resources.group(self.resources.values(), name)
        if document is None:
            raise failure(404, "NotFound", f"group {name} is not served")
        return document

    def _serve_resource_list(self, request: kmock.Request) -> Obj:
        parts = request.url.path.strip("/").split("/")
        group, version = ("", parts[1]) if parts[0] == "api" else (parts[1], parts[2])
        document = kube_resources.resource_list(self.resources.values(), group, version)
        if document is None:
            raise failure(404, "NotFound", f"{group}/{version} is not served")
        return document

    # -- lifecycle of the server ---------------------------------------------------------
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

    # -- reading -------------------------------------------------------------------------
    def _list_reaction(self, plural: str, version: str) -> Callable[[kmock.Request], Any]:
        resource = self.resources[plural]

        def serve(request: kmock.Request) -> Any:
            if plural in self.failing:
                raise kmock.KubernetesError(status=self.failing[plural], reason="Forbidden")
            params = dict(request.params)
            self._check_field_selector(resource, params)
            items = [
                obj
                for _, obj in sorted(self.objects[plural].items())
                if _matches(obj, request.namespace, params)
            ]
            start = int(request.params.get("continue") or 0)
            limit = int(request.params.get("limit") or 0) or len(items) or 1
            page = [view(resource, version, obj) for obj in items[start : start + limit]]
            metadata: Obj = {"resourceVersion": str(self.rv)}
            if start + limit < len(items):
                metadata["continue"] = str(start + limit)
            listed = {"kind": resource.kind + "List", "apiVersion": resource.api_version(version),
                      "metadata": metadata, "items": page}  # fmt: skip
            if not resource.crd:
                return listed  # unchanged for the older endpoints (and their benchmark)
            return self._respond(resource, version, 200, listed)

        return serve

    def _check_field_selector(self, resource: Resource, params: dict[str, str]) -> None:
        """Custom resources select on metadata.name and metadata.namespace only."""
        if not resource.crd:
            return
        for term in _selector_terms(params.get("fieldSelector", "")):
            path = re.split("!=|==|=", term)[0].strip()
            if path not in ("metadata.name", "metadata.namespace"):
                raise bad_request(f"field label not supported: {path}")

    def _watch_reaction(self, plural: str, version: str) -> Callable[[kmock.Request], Any]:
        resource = self.resources[plural]

        def serve(request: kmock.Request) -> Any:
            since = int(request.params.get("resourceVersion") or 0)
            if since < self.compacted_below[plural]:
                # Raised, not returned as kmock.Response: a returned Response's status sticks
                # to the reaction in kmock 0.8 and every later watch would get 410 too.
                raise kmock.KubernetesError(
                    status=410, reason="Expired", message="too old resource version"
                )
            self._check_field_selector(resource, dict(request.params))
            watcher = _Watcher(plural, request.namespace, dict(request.params), version=version)
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
                yield self._event_view(watcher, event)
            while (queued := await watcher.queue.get()) is not None:
                rv = int(queued["object"].get("metadata", {}).get("resourceVersion") or 0)
                self.served_at[rv] = time.perf_counter()
                yield self._event_view(watcher, queued)
        finally:
            self.watchers.remove(watcher)

    def _event_view(self, watcher: _Watcher, event: Obj) -> Obj:
        resource = self.resources[watcher.plural]
        if not resource.crd or event["type"] in ("BOOKMARK", "ERROR"):
            return event
        return {"type": event["type"], "object": view(resource, watcher.version, event["object"])}

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
        """Create or replace an object (storage version, no schema checks: the write of a
        controller); returns its new resourceVersion. uid and creationTimestamp are kept or
        assigned when missing; a custom resource's generation starts at 1 and moves when
        anything but metadata and status changes."""
        obj = copy.deepcopy(obj)
        metadata = obj.setdefault("metadata", {})
        key = (metadata.get("namespace", ""), metadata["name"])
        current = self.objects[plural].get(key)
        old = (current or {}).get("metadata", {})
        metadata["uid"] = metadata.get("uid") or old.get("uid") or str(uuid.uuid4())
        metadata.setdefault("creationTimestamp", old.get("creationTimestamp") or _now())
        resource = self.resources.get(plural)
        if resource is not None and resource.crd:
            obj.setdefault("apiVersion", resource.api_version(resource.storage))
            obj.setdefault("kind", resource.kind)
            if current is None:
                metadata.setdefault("generation", 1)
            else:
                changed = _spec_of(obj) != _spec_of(current)
                metadata["generation"] = int(old.get("generation") or 1) + changed
        self.rv += 1
        metadata["resourceVersion"] = str(self.rv)
        kind = "MODIFIED" if current is not None else "ADDED"
        if current is not None and old.get("uid") != metadata["uid"]:
            self._owners.pop(str(old.get("uid")), None)
        self.objects[plural][key] = obj
        self._owners[metadata["uid"]] = (plural, key)
        self._record(plural, {"type": kind, "object": obj})
        return self.rv

    def put_status(self, plural: str, namespace: str, name: str, status: Obj) -> int:
        """Replace the status of a stored object (a controller's status write)."""
        current = self.objects[plural][(namespace, name)]
        return self.put(plural, dict(current, status=copy.deepcopy(status)))

    def delete(self, plural: str, namespace: str, name: str, *, orphan: bool = False) -> int:
        """Delete an object, then (unless `orphan`) every object it alone owned, recursively,
        as the garbage collector does with background propagation; returns the resourceVersion
        of the first deletion."""
        obj = self.objects[plural].pop((namespace, name))
        self.rv += 1
        deleted_at = self.rv
        obj["metadata"]["resourceVersion"] = str(self.rv)
        uid = str(obj["metadata"].get("uid", ""))
        self._owners.pop(uid, None)
        self._record(plural, {"type": "DELETED", "object": obj})
        if not orphan and uid:
            self._collect_dependents(uid)
        return deleted_at

    def _collect_dependents(self, uid: str) -> None:
        for plural, objects in self.objects.items():
            for key, obj in list(objects.items()):
                owners = obj.get("metadata", {}).get("ownerReferences") or ()
                uids = {str(owner.get("uid")) for owner in owners if isinstance(owner, dict)}
                if uid in uids and not uids & self._owners.keys() and key in objects:
                    self.delete(plural, *key)

    def bookmark(self, plural: str) -> int:
        """Other resources moved on; open watches learn the new resourceVersion."""
        self.rv += 1
        resource = self.resources.get(plural)
        event = {
            "type": "BOOKMARK",
            "object": {
                "kind": resource.kind if resource else KINDS.get(plural),
                "metadata": {"resourceVersion": str(self.rv)},
            },
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


def _spec_of(obj: Obj) -> Obj:
    """What moves a custom resource's generation: all but metadata and status."""
    return {key: value for key, value in obj.items() if key not in ("metadata", "status")}


def _same(stored: Obj, current: Obj) -> bool:
    """A patch that changes nothing: the server writes nothing and sends no event."""

    def comparable(obj: Obj) -> Obj:
        metadata = {k: v for k, v in obj.get("metadata", {}).items() if k != "resourceVersion"}
        return dict(obj, metadata=metadata)

    return comparable(stored) == comparable(current)


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
