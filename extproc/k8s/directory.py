"""Where each E2B sandbox runs, from informers on agent-sandbox Sandboxes and their Pods.

The contract (docs/contracts/README.md, "Kubernetes mode"): a Sandbox carries the label
`e2b.agentcube.io/sandbox-id` and the lifecycle's proof annotation (object_proof.py); its
namespace is the tenant, its annotations give the end time, the sha256 of the envd access
token, whether it is paused and whether traffic resumes it. Its pod is the one agent-sandbox
names in the Sandbox's annotation `agents.x-k8s.io/pod-name` (the Sandbox's own name when
absent: the controller names the pod after the Sandbox), in the same namespace; the sandbox
is reachable when that pod is Ready and has an IP. Both informers are cluster-wide and select
on the id label's presence (the lifecycle puts it on the pod template and on a claim's
`additionalPodMetadata`), which is what the edge's ClusterRole (list/watch sandboxes and
pods) allows.

Transforms run on the informers' worker threads and keep only those facts (a few hundred bytes
per object instead of a whole pod spec), verifying the proof there too, so 10 000 sandboxes
stay far under 50 MiB and no HMAC runs on the loop. The join runs on the loop thread in the
informers' handlers and hands a `SandboxEndpoint` (or "gone") to a sink only when what a Check
would decide changes; the sink (the edge) turns it into its Route, precomputing everything
there so a Check only looks up.

The threat model: a tenant may create Pods and Sandboxes in its own namespace with any labels
and annotations, and learns other tenants' sandbox ids from hostnames. So
- only a Sandbox whose proof verifies counts. The proof binds namespace, name and id under a
  key tenants cannot read, so a Sandbox with a copied id label, even with a copied proof
  annotation, in another namespace or under another name, is ignored: it neither receives the
  victim's traffic nor makes the id ambiguous (which would deny the victim service);
- the pod is found by namespace and name from the proven Sandbox, never by its labels, so a pod
  that merely carries the victim's id label is ignored too;
- should two proven Sandboxes ever claim one id (only the lifecycle can write proofs, so that
  is our bug, not an attack), the id is routed nowhere and a warning says so.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from kubernetes.client import ApiClient

from extproc.k8s.informing import Informer
from extproc.k8s.listwatch import KubeObject, Transform, WatchTarget
from extproc.k8s.object_proof import SANDBOX_ID_LABEL as SANDBOX_ID_LABEL  # re-exported
from extproc.k8s.object_proof import has_valid_proof
from extproc.k8s.resources import POD, SANDBOX, Kind, cluster_list_call
from extproc.k8s.settings import InformerSettings

log = logging.getLogger(__name__)

END_AT_ANNOTATION = "e2b.agentcube.io/end-at"
ACCESS_TOKEN_ANNOTATION = "e2b.agentcube.io/access-token-sha256"  # noqa: S105 - a name
# `paused` while the lifecycle has the Sandbox scaled down by a pause; absent means running.
STATE_ANNOTATION = "e2b.agentcube.io/state"
PAUSED = "paused"
# `"true"` when a request to the paused sandbox should resume it (E2B's autoResume).
AUTO_RESUME_ANNOTATION = "e2b.agentcube.io/auto-resume"
ENVD_PORT = 49983
# Comma-separated ports E2B traffic may reach (envd's always); absent: every port.
PORTS_ANNOTATION = "e2b.agentcube.io/ports"
# Set by agent-sandbox's controller on every Sandbox: the name of its pod.
POD_NAME_ANNOTATION = "agents.x-k8s.io/pod-name"
# Never equal to a sha256 digest (32 bytes): an annotation that is present but malformed
# makes every token wrong rather than the sandbox open.
UNMATCHABLE_DIGEST = b"invalid"
_SANDBOX_ANNOTATIONS = (
    END_AT_ANNOTATION,
    ACCESS_TOKEN_ANNOTATION,
    STATE_ANNOTATION,
    AUTO_RESUME_ANNOTATION,
    POD_NAME_ANNOTATION,
    PORTS_ANNOTATION,
)


@dataclass(frozen=True, slots=True)
class SandboxEndpoint:
    sandbox_id: str
    namespace: str
    # IP of the Ready pod; "" while there is none (and always "" while paused).
    pod_ip: str
    # Unix seconds of the end-at annotation; 0.0 when absent or unreadable.
    end_at: float
    # sha256 digest of the envd access token; b"" when the annotation is absent (no token).
    access_token_sha256: bytes
    # The lifecycle paused it (scaled to zero); `auto_resume`: traffic should wake it.
    paused: bool = False
    auto_resume: bool = False
    # The ports E2B traffic may reach; None: every port.
    open_ports: frozenset[int] | None = None


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


def sandbox_facts(proof_key: bytes, obj: KubeObject) -> KubeObject:
    """Transform: a Sandbox reduced to its name, id label, the annotations the join reads and
    whether its proof verifies (`proven`); bind the key with functools.partial."""
    return {
        "metadata": _metadata(obj, _SANDBOX_ANNOTATIONS),
        "proven": has_valid_proof(proof_key, obj),
    }


def pod_facts(obj: KubeObject) -> KubeObject:
    """Transform: a Pod reduced to its name and `readyIP` (its IP when Ready, else "")."""
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


def parse_ports(text: str | None) -> frozenset[int] | None:
    """The ports annotation; an unreadable one opens only envd's port (fail closed)."""
    if text is None:
        return None
    try:
        ports = frozenset(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        log.warning("unreadable %s annotation %r: only envd's port", PORTS_ANNOTATION, text[:40])
        return frozenset({ENVD_PORT})
    return ports | {ENVD_PORT}


def _sandbox_id(obj: KubeObject) -> str:
    return str(obj["metadata"]["labels"][SANDBOX_ID_LABEL])


def _object_key(obj: KubeObject) -> tuple[str, str]:
    metadata = obj["metadata"]
    return str(metadata.get("namespace") or ""), str(metadata.get("name") or "")


@dataclass(frozen=True, slots=True)
class _Claim:
    """A proven Sandbox: what it says, and (namespace, name) of the pod it names."""

    facts: SandboxEndpoint
    pod: tuple[str, str]


class SandboxJoin:
    """Proven Sandboxes and their pods; publishes changed endpoints to the sink."""

    def __init__(self, sink: EndpointSink) -> None:
        self._sink = sink
        # id -> (namespace, name) of each proven Sandbox claiming it -> its claim
        self._sandboxes: dict[str, dict[tuple[str, str], _Claim]] = {}
        # (namespace, name) of every labelled pod -> readyIP
        self._pods: dict[tuple[str, str], str] = {}
        # (namespace, pod name) -> the ids whose proven Sandbox names that pod
        self._pod_owners: dict[tuple[str, str], set[str]] = {}
        # (namespace, name) of each proven Sandbox -> the id it is counted under
        self._claimed: dict[tuple[str, str], str] = {}
        self._published: dict[str, SandboxEndpoint] = {}
        # (namespace, name) of unproven Sandboxes already logged, so each is logged once
        self._ignored: set[tuple[str, str]] = set()

    def sandbox_changed(self, obj: KubeObject, present: bool) -> None:
        key = _object_key(obj)
        # Undo what this object counted for before: its id label may have changed, and a
        # DELETED event for an object that stopped matching the selector lacks the label.
        old_id = self._claimed.pop(key, None)
        if old_id is not None:
            claims = self._sandboxes[old_id]
            self._disown(claims.pop(key).pod, old_id)
            if not claims:
                del self._sandboxes[old_id]
        sandbox_id = _sandbox_id(obj)
        proven = present and bool(sandbox_id) and bool(obj.get("proven"))
        if proven or not present:
            self._ignored.discard(key)
        elif sandbox_id and key not in self._ignored:
            self._ignored.add(key)
            log.info(
                "ignoring Sandbox %s/%s: it carries sandbox id %s without the gateway's proof",
                *key,
                sandbox_id,
            )
        if proven:
            annotations = obj["metadata"]["annotations"]
            pod = (key[0], annotations.get(POD_NAME_ANNOTATION) or key[1])
            facts = SandboxEndpoint(
                sandbox_id=sandbox_id,
                namespace=key[0],
                pod_ip="",
                end_at=parse_end_at(annotations.get(END_AT_ANNOTATION)),
                access_token_sha256=parse_token_digest(annotations.get(ACCESS_TOKEN_ANNOTATION)),
                paused=annotations.get(STATE_ANNOTATION) == PAUSED,
                auto_resume=annotations.get(AUTO_RESUME_ANNOTATION) == "true",
                open_ports=parse_ports(annotations.get(PORTS_ANNOTATION)),
            )
            self._sandboxes.setdefault(sandbox_id, {})[key] = _Claim(facts, pod)
            self._pod_owners.setdefault(pod, set()).add(sandbox_id)
            self._claimed[key] = sandbox_id
        if old_id is not None and old_id != sandbox_id:
            self._publish(old_id)
        if sandbox_id:
            self._publish(sandbox_id)

    def _disown(self, pod: tuple[str, str], sandbox_id: str) -> None:
        owners = self._pod_owners.get(pod)
        if owners is not None:
            owners.discard(sandbox_id)
            if not owners:
                del self._pod_owners[pod]

    def pod_changed(self, obj: KubeObject, present: bool) -> None:
        key = _object_key(obj)
        if present:
            self._pods[key] = str(obj.get("readyIP") or "")
        else:
            self._pods.pop(key, None)
        for sandbox_id in sorted(self._pod_owners.get(key, ())):
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
                "sandbox id %s is claimed by %d proven Sandboxes (%s): routing it nowhere",
                sandbox_id,
                len(claims),
                ", ".join(sorted(f"{ns}/{name}" for ns, name in claims)),
            )
            return None
        claim = next(iter(claims.values()))
        if claim.facts.paused:
            return claim.facts  # its pod may linger while scaling down: never route to it
        ready_ip = self._pods.get(claim.pod, "")
        return replace(claim.facts, pod_ip=ready_ip) if ready_ip else claim.facts


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
    """The two cluster-wide informers feeding a SandboxJoin.

    `proof_key` is the key of object_proof.py (Secret `e2b-object-proof-key`): Sandboxes
    whose proof does not verify under it are ignored.
    """

    def __init__(
        self, client: ApiClient, settings: InformerSettings, sink: EndpointSink, proof_key: bytes
    ) -> None:
        if not proof_key:
            raise ValueError("the Sandbox proof key is empty")
        self.join = SandboxJoin(sink)

        def informer(
            kind: Kind, facts: Transform, changed: Callable[[KubeObject, bool], None]
        ) -> Informer:
            target = WatchTarget(
                name=kind.plural,
                list_call=cluster_list_call(client, kind),
                label_selector=SANDBOX_ID_LABEL,
                transform=facts,
            )
            return Informer(target, settings, [_Handler(changed)])

        self.sandboxes = informer(
            SANDBOX, functools.partial(sandbox_facts, proof_key), self.join.sandbox_changed
        )
        self.pods = informer(POD, pod_facts, self.join.pod_changed)
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
