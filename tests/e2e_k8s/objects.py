"""What the fake controllers share about API objects: the store they read and write (the fake
API of tests/support/kubeapi.py, in-process), owner references, conditions and timestamps.

Objects are plain dicts in the API's storage version, as `FakeApi.objects` holds them.
"""

from __future__ import annotations

import copy
import random
import string
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, Protocol

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace, name)

# agent-sandbox's labels and annotations (notes/agent-sandbox-facts.md).
POD_NAME_ANNOTATION = "agents.x-k8s.io/pod-name"
NAME_HASH_LABEL = "agents.x-k8s.io/sandbox-name-hash"
CLAIM_UID_LABEL = "agents.x-k8s.io/claim-uid"
SANDBOX_NAME_LABEL = "agents.x-k8s.io/sandbox-name"


class Store(Protocol):
    """What the controllers and the kubelet need from the fake API (tests/support/kubeapi.py):
    `put`/`delete` are its in-process server-side writes, `listeners` get (plural, event
    type, object) after every change, deletions included."""

    objects: dict[str, dict[Key, Obj]]
    listeners: list[Callable[[str, str, Obj], None]]

    def put(self, plural: str, obj: Obj) -> int: ...

    def delete(self, plural: str, namespace: str, name: str) -> int: ...


def key_of(obj: Obj) -> Key:
    metadata = obj.get("metadata") or {}
    return (metadata.get("namespace") or "", metadata.get("name") or "")


def get(api: Store, plural: str, namespace: str, name: str) -> Obj | None:
    """A copy of the stored object, to change and put back."""
    obj = api.objects.get(plural, {}).get((namespace, name))
    return copy.deepcopy(obj) if obj is not None else None


def in_namespace(api: Store, plural: str, namespace: str) -> Iterator[Obj]:
    """The stored objects of `plural` in `namespace`, in name order (not copies: read only)."""
    for (ns, _), obj in sorted(api.objects.get(plural, {}).items()):
        if ns == namespace:
            yield obj


def _comparable(obj: Obj) -> Obj:
    shown = copy.deepcopy(obj)
    shown.get("metadata", {}).pop("resourceVersion", None)
    return shown


def write(api: Store, plural: str, obj: Obj) -> bool:
    """Put `obj` unless the stored one is the same: a controller that writes only changes
    reaches a fixed point instead of reacting to its own MODIFIED events forever."""
    current = api.objects.get(plural, {}).get(key_of(obj))
    if current is not None and _comparable(current) == _comparable(obj):
        return False
    api.put(plural, obj)
    return True


def remove(api: Store, plural: str, namespace: str, name: str) -> bool:
    if (namespace, name) not in api.objects.get(plural, {}):
        return False
    api.delete(plural, namespace, name)
    return True


def new_uid() -> str:
    return str(uuid.uuid4())


def random_suffix(length: int = 5) -> str:
    return "".join(random.choices(string.ascii_lowercase + string.digits, k=length))


def owner_reference(owner: Obj, api_version: str, kind: str) -> Obj:
    """A controller reference to `owner` (stored objects need not carry apiVersion/kind)."""
    metadata = owner["metadata"]
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": metadata["name"],
        "uid": metadata.get("uid", ""),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def controller_of(obj: Obj) -> Obj | None:
    """The ownerReference with `controller: true`, if any."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


def owned_by(obj: Obj, owner: Obj) -> bool:
    ref = controller_of(obj)
    uid = (owner.get("metadata") or {}).get("uid")
    return ref is not None and bool(uid) and ref.get("uid") == uid


def now() -> datetime:
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: object) -> datetime | None:
    """An RFC 3339 timestamp (`Z` or an offset), or None when absent or unreadable."""
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def condition(status: Obj, kind: str) -> Obj | None:
    for entry in status.get("conditions") or []:
        if entry.get("type") == kind:
            return dict(entry)
    return None


def is_ready(obj: Obj) -> bool:
    ready = condition(obj.get("status") or {}, "Ready")
    return ready is not None and ready.get("status") == "True"


def with_condition(status: Obj, kind: str, value: bool, reason: str, message: str = "") -> Obj:
    """`status` with condition `kind` set; its lastTransitionTime moves only when the value
    does, so rewriting the same state is no change."""
    updated = dict(status)
    previous = condition(status, kind)
    text = "True" if value else "False"
    since = rfc3339(now())
    if previous is not None and previous.get("status") == text:
        since = previous.get("lastTransitionTime") or since
    entry = {
        "type": kind,
        "status": text,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
    }
    others = [c for c in status.get("conditions") or [] if c.get("type") != kind]
    updated["conditions"] = [*others, entry]
    return updated


def merged_metadata(metadata: Obj, extra: Obj) -> Obj:
    """`metadata` with `extra`'s labels and annotations added (extra wins)."""
    result = dict(metadata)
    for field in ("labels", "annotations"):
        values = {**(metadata.get(field) or {}), **(extra.get(field) or {})}
        if values:
            result[field] = values
    return result
