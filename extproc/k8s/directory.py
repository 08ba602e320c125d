"""Where each E2B sandbox runs, from informers on agent-sandbox Sandboxes and their Pods.

The contract (docs/contracts/README.md, "Kubernetes mode"): both carry the label
`e2b.agentcube.io/sandbox-id`; the Sandbox's namespace is the tenant, its annotations give the
end time and the sha256 of the envd access token; the sandbox is reachable when a Pod with the
same label *in the same namespace* is Ready and has an IP. Both informers are cluster-wide and
select on the label's presence, which is what the edge's ClusterRole (list/watch sandboxes and
pods) allows.

Transforms run on the informers' worker threads and keep only those facts (a few hundred bytes
per object instead of a whole pod spec), so 10 000 sandboxes stay far under 50 MiB. The join
runs on the loop thread in the informers' handlers and hands a `SandboxEndpoint` (or "gone")
to a sink only when what a Check would decide changes; the sink (the edge) turns it into its
Route, precomputing everything there so a Check only looks up.

Why a pod must share the Sandbox's namespace, and why an id claimed by two Sandboxes is
routed nowhere: a tenant may create Pods and Sandboxes in its own namespace with any labels.
Joining across namespaces, or picking one of two claimants, would let a tenant that learns
another's sandbox id (it is in every hostname) receive that sandbox's traffic, access token
included. Refusing an ambiguous id turns that into a denial of service on one id, logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from kubernetes.client import ApiClient

from extproc.k8s.informing import Informer
from extproc.k8s.listwatch import KubeObject, WatchTarget
from extproc.k8s.resources import POD, SANDBOX, cluster_list_call
from extproc.k8s.settings import InformerSettings

log = logging.getLogger(__name__)

SANDBOX_ID_LABEL = "e2b.agentcube.io/sandbox-id"
END_AT_ANNOTATION = "e2b.agentcube.io/end-at"
ACCESS_TOKEN_ANNOTATION = "e2b.agentcube.io/access-token-sha256"  # noqa: S105 - a name
# Never equal to a sha256 digest (32 bytes): an annotation that is present but malformed
# makes every token wrong rather than the sandbox open.
UNMATCHABLE_DIGEST = b"invalid"


@dataclass(frozen=True, slots=True)
class SandboxEndpoint:
    sandbox_id: str
    namespace: str
    # IP of the Ready pod; "" while there is none.
    pod_ip: str
    # Unix seconds of the end-at annotation; 0.0 when absent or unreadable.
    end_at: float
    # sha256 digest of the envd access token; b"" when the annotation is absent (no token).
    access_token_sha256: bytes


class EndpointSink(Protocol):
    def put(self, endpoint: SandboxEndpoint) -> None: ...

    def gone(self, sandbox_id: str) -> None: ...


def _metadata(obj: KubeObject, annotations: tuple[str, ...] = ()) -> dict[str, Any]:
    metadata = obj.get("metadata") or {}
    kept: dict[str, Any] = {
        key: metadata[key] for key in ("name", "namespace", "resourceVersion") if key in metadata
    }
    labels = metadata.get("labels") or {}
    kept["labels"] = {SANDBOX_ID_LABEL: str(labels.get(SANDBOX_ID_LABEL, ""))}
    found = metadata.get("annotations") or {}
    kept["annotations"] = {key: str(found[key]) for key in annotations if key in found}
    return kept


def sandbox_facts(obj: KubeObject) -> KubeObject:
    """Transform: a Sandbox reduced to its name, id label and our two annotations."""
    return {"metadata": _metadata(obj, (END_AT_ANNOTATION, ACCESS_TOKEN_ANNOTATION))}


def pod_facts(obj: KubeObject) -> KubeObject:
    """Transform: a Pod reduced to its id label and `readyIP` (its IP when Ready, else "")."""
    metadata = obj.get("metadata") or {}
    status = obj.get("status") or {}
    ready = not metadata.get("deletionTimestamp") and any(
        condition.get("type") == "Ready" and condition.get("status") == "True"
        for condition in status.get("conditions") or ()
    )
    return {"metadata": _metadata(obj), "readyIP": str(status.get("podIP") or "") if ready else ""}


def parse_end_at(text: str | None) -> float:
    if not text:
        return 0.0
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        log.warning("ignoring unreadable %s annotation %r", END_AT_ANNOTATION, text[:40])
        return 0.0


def parse_token_digest(text: str | None) -> bytes:
    if text is None:
        return b""
    try:
        digest = bytes.fromhex(text)
    except ValueError:
        digest = b""
    return digest if len(digest) == 32 else UNMATCHABLE_DIGEST


def _sandbox_id(obj: KubeObject) -> str:
    return str(obj["metadata"]["labels"][SANDBOX_ID_LABEL])


class SandboxJoin:
    """Sandboxes and pods by sandbox id; publishes changed endpoints to the sink."""

    def __init__(self, sink: EndpointSink) -> None:
        self._sink = sink
        # id -> (namespace, name) -> the Sandbox's facts
        self._sandboxes: dict[str, dict[tuple[str, str], SandboxEndpoint]] = {}
        # (namespace, id) -> pod name -> readyIP
        self._pods: dict[tuple[str, str], dict[str, str]] = {}
        self._published: dict[str, SandboxEndpoint] = {}

    def sandbox_changed(self, obj: KubeObject, present: bool) -> None:
        sandbox_id = _sandbox_id(obj)
        if not sandbox_id:
            return
        metadata = obj["metadata"]
        key = (str(metadata.get("namespace") or ""), str(metadata.get("name") or ""))
        claims = self._sandboxes.setdefault(sandbox_id, {})
        if present:
            annotations = metadata["annotations"]
            claims[key] = SandboxEndpoint(
                sandbox_id=sandbox_id,
                namespace=key[0],
                pod_ip="",
                end_at=parse_end_at(annotations.get(END_AT_ANNOTATION)),
                access_token_sha256=parse_token_digest(annotations.get(ACCESS_TOKEN_ANNOTATION)),
            )
        else:
            claims.pop(key, None)
            if not claims:
                del self._sandboxes[sandbox_id]
        self._publish(sandbox_id)

    def pod_changed(self, obj: KubeObject, present: bool) -> None:
        sandbox_id = _sandbox_id(obj)
        if not sandbox_id:
            return
        metadata = obj["metadata"]
        key = (str(metadata.get("namespace") or ""), sandbox_id)
        pods = self._pods.setdefault(key, {})
        if present:
            pods[str(metadata.get("name") or "")] = str(obj.get("readyIP") or "")
        else:
            pods.pop(str(metadata.get("name") or ""), None)
            if not pods:
                del self._pods[key]
        self._publish(sandbox_id)

    def _publish(self, sandbox_id: str) -> None:
        endpoint = self._endpoint(sandbox_id)
        previous = self._published.get(sandbox_id)
        if endpoint == previous:
            return
        if endpoint is None:
            del self._published[sandbox_id]
            self._sink.gone(sandbox_id)
        else:
            self._published[sandbox_id] = endpoint
            self._sink.put(endpoint)

    def _endpoint(self, sandbox_id: str) -> SandboxEndpoint | None:
        claims = self._sandboxes.get(sandbox_id)
        if not claims:
            return None
        if len(claims) > 1:
            log.warning(
                "sandbox id %s is claimed by %d Sandboxes (%s): routing it nowhere",
                sandbox_id,
                len(claims),
                ", ".join(sorted(f"{ns}/{name}" for ns, name in claims)),
            )
            return None
        facts = next(iter(claims.values()))
        pods = self._pods.get((facts.namespace, sandbox_id), {})
        # Normally one pod; during a replacement the old one may linger: take a Ready one,
        # the same one every time (by name).
        ready = [ip for _, ip in sorted(pods.items()) if ip]
        if not ready:
            return facts
        return SandboxEndpoint(
            facts.sandbox_id, facts.namespace, ready[0], facts.end_at, facts.access_token_sha256
        )


class _Handler:
    def __init__(self, changed: Callable[[KubeObject, bool], None]) -> None:
        self._changed = changed

    def on_add(self, obj: KubeObject) -> None:
        self._changed(obj, True)

    def on_update(self, old: KubeObject, new: KubeObject) -> None:
        self._changed(new, True)

    def on_delete(self, obj: KubeObject) -> None:
        self._changed(obj, False)


class SandboxInformers:
    """The two cluster-wide informers feeding a SandboxJoin."""

    def __init__(self, client: ApiClient, settings: InformerSettings, sink: EndpointSink) -> None:
        self.join = SandboxJoin(sink)
        self.sandboxes = Informer(
            WatchTarget(
                name=SANDBOX.plural,
                list_call=cluster_list_call(client, SANDBOX),
                label_selector=SANDBOX_ID_LABEL,
                transform=sandbox_facts,
            ),
            settings,
            [_Handler(self.join.sandbox_changed)],
        )
        self.pods = Informer(
            WatchTarget(
                name=POD.plural,
                list_call=cluster_list_call(client, POD),
                label_selector=SANDBOX_ID_LABEL,
                transform=pod_facts,
            ),
            settings,
            [_Handler(self.join.pod_changed)],
        )
        self.synced = asyncio.Event()

    @property
    def informers(self) -> tuple[Informer, Informer]:
        return (self.sandboxes, self.pods)

    @property
    def connected(self) -> bool:
        return self.sandboxes.status.connected and self.pods.status.connected

    async def watch(self) -> None:
        """Run both informers until cancelled; `synced` is set once both have listed."""
        async with asyncio.TaskGroup() as group:
            for informer in self.informers:
                group.create_task(informer.run(), name=f"informer-{informer.target.name}")
            await self.sandboxes.synced.wait()
            await self.pods.synced.wait()
            log.info(
                "sandbox directory synced from the cluster: %d sandboxes",
                len(self.sandboxes.store),
            )
            self.synced.set()
