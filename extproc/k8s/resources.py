"""Get, create, merge-patch, delete and list of one resource kind, as coroutines of dicts.

The lifecycle backend's writes (Sandboxes, SandboxClaims, pod labels, the two Secrets) and
its few reads (CodeInterpreters, a claim's binding) go through here. Why dicts and raw
responses (`_preload_content=False`): the CRDs have no generated models, and one shape for
core and custom resources keeps the callers free of client types. Why a small thread pool:
the official client blocks; each call is short (no watches here; those are `informing`'s),
so a few workers shared by all calls keep the event loop free.

Errors become domain errors here, once: 404 NotFound, 409 AlreadyExists, 410/422/400
InvalidArgument-ish problems are the caller's bug so they surface as Unavailable with the
HTTP status, and transport failures are Unavailable. Messages name the object, never a body.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from extproc.core.errors import AlreadyExists, NotFound, Unavailable
from extproc.k8s.listwatch import KubeObject, ListCall, Transform, WatchTarget

MERGE_PATCH = "application/merge-patch+json"
# On every write: an unknown field fails the request (400) instead of being dropped with a
# Warning header nobody reads, which is how a misspelt field would silently do nothing.
STRICT = "Strict"


@dataclass(frozen=True, slots=True)
class Kind:
    """A namespaced resource: core when `group` is empty."""

    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


# The v1alpha1 Sandbox, served by every agent-sandbox release (read-only users: the edge's
# informers). Writers pick their version through discovery.py.
SANDBOX = Kind("agents.x-k8s.io", "v1alpha1", "sandboxes", "Sandbox")
CODE_INTERPRETER = Kind(
    "runtime.agentcube.volcano.sh", "v1alpha1", "codeinterpreters", "CodeInterpreter"
)
POD = Kind("", "v1", "pods", "Pod")
SECRET = Kind("", "v1", "secrets", "Secret")
PERSISTENT_VOLUME_CLAIM = Kind("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim")


class Resources:
    """Async calls on namespaced resources through one ApiClient."""

    def __init__(
        self,
        client: ApiClient,
        *,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 30.0,
        workers: int = 8,
    ) -> None:
        self._client = client
        self._custom = CustomObjectsApi(client)
        self._core = CoreV1Api(client)
        self._timeout = (connect_timeout_s, read_timeout_s)
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="k8s-api")

    @property
    def client(self) -> ApiClient:
        return self._client

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def get(self, kind: Kind, namespace: str, name: str) -> KubeObject:
        call = self._bind("get", kind, namespace, name)
        return await self._call(call, f"get {kind.kind} {namespace}/{name}")

    async def list(self, kind: Kind, namespace: str, label_selector: str = "") -> list[KubeObject]:
        """All objects of `kind` in `namespace` (one page; templates and the like are few)."""
        extra: dict[str, Any] = {"label_selector": label_selector} if label_selector else {}
        call = self._bind("list", kind, namespace, **extra)
        page = await self._call(call, f"list {kind.plural} in {namespace}")
        return [item for item in page.get("items") or () if isinstance(item, dict)]

    async def create(self, kind: Kind, namespace: str, body: KubeObject) -> KubeObject:
        name = body.get("metadata", {}).get("name", "")
        call = self._bind("create", kind, namespace, body=body, field_validation=STRICT)
        return await self._call(call, f"create {kind.kind} {namespace}/{name}")

    async def patch(self, kind: Kind, namespace: str, name: str, patch: KubeObject) -> KubeObject:
        """A JSON merge patch (RFC 7386): the API server's only patch type for CRDs besides
        JSON patch; the official client would otherwise send a strategic merge patch."""
        call = self._bind(
            "patch", kind, namespace, name, patch, _content_type=MERGE_PATCH,
            field_validation=STRICT,
        )  # fmt: skip
        return await self._call(call, f"patch {kind.kind} {namespace}/{name}")

    async def delete(self, kind: Kind, namespace: str, name: str) -> None:
        call = self._bind("delete", kind, namespace, name)
        await self._call(call, f"delete {kind.kind} {namespace}/{name}")

    def watch_target(
        self, kind: Kind, label_selector: str, transform: Transform | None = None
    ) -> WatchTarget:
        return WatchTarget(
            name=f"{kind.plural}/{label_selector}",
            list_call=cluster_list_call(self._client, kind),
            label_selector=label_selector,
            transform=transform,
        )

    def _bind(
        self,
        verb: str,
        kind: Kind,
        namespace: str,
        name: str | None = None,
        body: KubeObject | None = None,
        **options: Any,
    ) -> Callable[..., Any]:
        """The client method for `verb` on `kind` with its arguments in that method's order:
        custom objects take (group, version, namespace, plural, [name], [body]), core ones
        ([name], namespace, [body]) and say `read` where custom objects say `get`."""
        named = () if name is None else (name,)
        bodies = () if body is None else (body,)
        if kind.group:
            method = getattr(self._custom, f"{verb}_namespaced_custom_object")
            return functools.partial(
                method, kind.group, kind.version, namespace, kind.plural, *named, *bodies, **options
            )
        core_verb = "read" if verb == "get" else verb
        method = getattr(self._core, f"{core_verb}_namespaced_{_core_name(kind)}")
        return functools.partial(method, *named, namespace, *bodies, **options)

    async def _call(self, call: Callable[..., Any], what: str) -> KubeObject:
        def blocking() -> KubeObject:
            response = call(_preload_content=False, _request_timeout=self._timeout)
            try:
                data = response.data
            finally:
                response.release_conn()
            doc = json.loads(data) if data else {}
            return doc if isinstance(doc, dict) else {}

        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, blocking)
        except ApiException as error:
            if error.status == 404:
                raise NotFound(f"{what}: not found") from error
            if error.status == 409:
                raise AlreadyExists(f"{what}: already exists") from error
            reason = f"HTTP {error.status} {error.reason or ''}".strip()
            raise Unavailable(f"{what}: {reason}") from error
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as error:
            raise Unavailable(f"{what}: {type(error).__name__}") from error


def cluster_list_call(client: ApiClient, kind: Kind) -> ListCall:
    """The all-namespaces list method of `kind` for an informer's `WatchTarget`."""
    if kind.group:
        return functools.partial(
            CustomObjectsApi(client).list_cluster_custom_object,
            kind.group,
            kind.version,
            kind.plural,
        )
    method: ListCall = getattr(CoreV1Api(client), f"list_{_core_name(kind)}_for_all_namespaces")
    return method


def _core_name(kind: Kind) -> str:
    return {
        "pods": "pod",
        "secrets": "secret",
        "configmaps": "config_map",
        "persistentvolumeclaims": "persistent_volume_claim",
    }[kind.plural]
