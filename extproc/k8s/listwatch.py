"""The blocking half of an informer: one LIST (all pages) or one WATCH through the client.

Runs on the informer's worker thread only. It parses JSON and applies the informer's
transform here, so the event loop receives small ready-made dicts; it keeps no cache and makes
no decisions (410 handling, backoff and the store live in `informing`).

Why raw responses (`_preload_content=False`) and not `kubernetes.watch.Watch`: Watch turns
each event into a typed model that the informer would turn straight back into a dict, it
hides the response so another thread cannot shut it down, and it has no bookmark or
410-as-status handling we could reuse. The client still builds the URL, auth and TLS.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes.client.exceptions import ApiException

from extproc.k8s.settings import InformerSettings

KubeObject = dict[str, Any]
Transform = Callable[[KubeObject], KubeObject]


class ListCall(Protocol):
    """A client list method with its path arguments bound, e.g.
    `functools.partial(CoreV1Api(client).list_namespaced_secret, "agentcube-system")`."""

    def __call__(self, **kwargs: Any) -> Any: ...


class ResourceGone(Exception):
    """The resourceVersion is too old (HTTP 410, as a status or an ERROR event): relist."""


class WatchFailed(Exception):
    """The API server ended the watch with an ERROR event other than 410."""


def field_selector_for_name(name: str) -> str:
    """`metadata.name=<name>`: lets RBAC `resourceNames` allow the list and the watch."""
    return f"metadata.name={name}"


@dataclass(frozen=True, slots=True)
class WatchTarget:
    # Short label for logs, metrics and the worker thread, e.g. "secret/e2b-api-keys".
    name: str
    list_call: ListCall
    field_selector: str | None = None
    label_selector: str | None = None
    # Applied on the worker thread to every listed or watched object before it is cached:
    # drop what the handlers never read (managedFields, pod specs) to keep memory small.
    # It must keep metadata.name, metadata.namespace and metadata.resourceVersion.
    transform: Transform | None = None

    def selectors(self) -> dict[str, str]:
        """The list and watch calls' selector arguments, the ones that are set."""
        given = (("field_selector", self.field_selector), ("label_selector", self.label_selector))
        return {argument: value for argument, value in given if value}


@dataclass(frozen=True, slots=True)
class Listing:
    items: list[KubeObject]
    resource_version: str


def list_all(target: WatchTarget, settings: InformerSettings) -> Listing:
    """A consistent LIST (no resourceVersion: read from etcd, never a stale cache), paged.

    The pages of one list share a snapshot, so the first page's resourceVersion is the
    snapshot's. An expired `continue` token raises ResourceGone and the informer starts over.
    """
    items: list[KubeObject] = []
    resource_version = ""
    token: str | None = None
    timeout = (settings.connect_timeout_s, settings.read_grace_s)
    while True:
        kwargs: dict[str, Any] = {"limit": settings.page_size, **target.selectors()}
        if token:
            kwargs["_continue"] = token
        try:
            response = target.list_call(**kwargs, _preload_content=False, _request_timeout=timeout)
        except ApiException as error:
            if error.status == 410:
                raise ResourceGone(f"list continue token expired: {error.reason}") from error
            raise
        try:
            page = json.loads(response.data)
        finally:
            response.release_conn()
        if not isinstance(page, dict):
            raise ValueError(f"{target.name}: list response is not a JSON object")
        metadata = page.get("metadata") or {}
        if not resource_version:
            resource_version = str(metadata.get("resourceVersion") or "")
        for item in page.get("items") or ():
            items.append(target.transform(item) if target.transform else item)
        token = metadata.get("continue") or None
        if token is None:
            return Listing(items, resource_version)


class WatchStream:
    """One WATCH request whose blocking read another thread can interrupt with `abort()`."""

    def __init__(self, target: WatchTarget, settings: InformerSettings) -> None:
        self._target = target
        self._settings = settings
        self._lock = threading.Lock()
        self._response: Any = None
        self._aborted = False

    def abort(self) -> None:
        """Unblock the reading thread (shut the socket's read side); safe from any thread."""
        with self._lock:
            self._aborted = True
            response = self._response
        if response is not None:
            # Already released or never connected: nothing is blocked on it.
            with contextlib.suppress(ValueError, RuntimeError, OSError):
                response.shutdown()

    def run(
        self,
        resource_version: str,
        on_open: Callable[[], None],
        on_event: Callable[[KubeObject], None],
    ) -> None:
        """Watch from `resource_version` until the server ends the stream or `abort()`.

        Raises ResourceGone for a 410 status; any transport error propagates.
        """
        settings = self._settings
        try:
            response = self._target.list_call(
                **self._target.selectors(),
                watch=True,
                allow_watch_bookmarks=True,
                resource_version=resource_version,
                timeout_seconds=settings.watch_timeout_s,
                _preload_content=False,
                _request_timeout=(
                    settings.connect_timeout_s,
                    settings.watch_timeout_s + settings.read_grace_s,
                ),
            )
        except ApiException as error:
            if error.status == 410:
                raise ResourceGone(f"watch from {resource_version}: {error.reason}") from error
            raise
        with self._lock:
            if self._aborted:
                response.release_conn()
                return
            self._response = response
        try:
            on_open()
            for line in _lines(response):
                event = json.loads(line)
                if not isinstance(event, dict):
                    raise ValueError(f"{self._target.name}: watch event is not a JSON object")
                transform = self._target.transform
                obj = event.get("object")
                if transform and event.get("type") in _OBJECT_EVENTS and isinstance(obj, dict):
                    event["object"] = transform(obj)
                on_event(event)
        except Exception:
            if self._aborted:
                return  # the informer stopped listening; the error is our own shutdown
            raise
        finally:
            with self._lock:
                self._response = None
            response.release_conn()


_OBJECT_EVENTS = frozenset({"ADDED", "MODIFIED", "DELETED"})


def _lines(response: Any) -> Iterator[bytes]:
    """Newline-delimited JSON from a chunked response, as soon as each line is complete."""
    buffer = b""
    for chunk in response.stream(amt=None, decode_content=True):
        buffer += chunk
        while (end := buffer.find(b"\n")) != -1:
            line, buffer = buffer[:end].strip(), buffer[end + 1 :]
            if line:
                yield line
    if buffer.strip():
        yield buffer.strip()


def status_code(status: Mapping[str, Any]) -> int:
    """The `code` of a metav1.Status carried by an ERROR event (0 when absent)."""
    code = status.get("code")
    return code if isinstance(code, int) else 0
