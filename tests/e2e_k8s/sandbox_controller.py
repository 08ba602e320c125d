"""agent-sandbox's Sandbox controller, as the facts describe it (notes/agent-sandbox-facts.md).

For a Sandbox that runs (v1alpha1 `replicas: 1`, v1beta1 `operatingMode: Running`):
- a Pod named exactly like the Sandbox, in its namespace, with the pod template's labels and
  annotations plus `agents.x-k8s.io/sandbox-name-hash`, owned by the Sandbox; the kubelet
  (kubelet.py) runs it. The Pod is made once: later template changes do not reach it (a claim
  that adopts a Sandbox patches the Pod itself, claim_controller.py).
- for each `spec.volumeClaimTemplates` entry a PVC `<template name>-<sandbox name>` owned by
  the Sandbox (assumption: upstream's naming) and a pod volume using it; the kubelet keeps
  such a volume's directory across pods, so the workspace survives a scale-down.
- annotation `agents.x-k8s.io/pod-name` on the Sandbox; status condition Ready (the Pod is
  Running, Ready and has an IP), `podIPs`, `replicas`, `selector`, and `serviceFQDN` when
  `spec.service` asks for one (no Service object is made: nothing here resolves DNS).

Scaled down (`replicas: 0` / `Suspended`): the Pod is deleted, the Sandbox and its PVCs stay.

`spec.shutdownTime`: at that time policy `Delete` deletes the Sandbox (the API's garbage
collector then deletes its Pod and PVCs) and `Retain`, the default, deletes only the Pod and
keeps the Sandbox with condition Ready False, reason `SandboxExpired` (assumption: the reason's
name). A claim's own `spec.lifecycle` with policy `Retain` expires the claimed Sandbox the same
way (assumption; `Delete` is the claim controller's: it deletes the claim). This needs nothing
but this process: expiry works with the lifecycle service stopped.
"""

from __future__ import annotations

import copy
import uuid
from datetime import datetime

from e2e_k8s.kubelet import NODE_NAME
from e2e_k8s.objects import (
    NAME_HASH_LABEL,
    POD_NAME_ANNOTATION,
    Key,
    Obj,
    Store,
    controller_of,
    get,
    key_of,
    now,
    owner_reference,
    parse_time,
    remove,
    with_condition,
    write,
)
from e2e_k8s.reconciling import Controller, Mapper
from e2e_k8s.versions import AgentSandbox

PODS, PVCS = "pods", "persistentvolumeclaims"


def name_hash(name: str) -> str:
    return uuid.uuid5(uuid.NAMESPACE_DNS, name).hex[:8]


def pvc_name(template: Obj, sandbox_name: str) -> str:
    return f"{(template.get('metadata') or {}).get('name', 'volume')}-{sandbox_name}"


def pod_is_ready(pod: Obj | None) -> bool:
    if pod is None:
        return False
    status = pod.get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    return status.get("phase") == "Running" and ready and bool(status.get("podIP"))


class SandboxController(Controller):
    plural = "sandboxes"

    def __init__(self, api: Store, delay_s: float, release: AgentSandbox) -> None:
        super().__init__(api, delay_s)
        self.release = release

    def watches(self) -> dict[str, Mapper]:
        def pod_owner(pod: Obj) -> list[Key]:
            ref = controller_of(pod)
            if ref is None or ref.get("kind") != "Sandbox":
                return []
            return [(key_of(pod)[0], str(ref.get("name")))]

        def claimed(claim: Obj) -> list[Key]:
            name = ((claim.get("status") or {}).get("sandbox") or {}).get("name")
            return [(key_of(claim)[0], name)] if name else []

        return {PODS: pod_owner, "sandboxclaims": claimed}

    def reconcile(self, key: Key) -> None:
        sandbox = get(self.api, self.plural, *key)
        if sandbox is None:
            return  # the garbage collector deletes what it owned
        namespace, name = key
        expired = self._expired(sandbox)
        if expired == "Delete":
            self.log.info("sandbox %s/%s: shutdownTime reached, deleting it", namespace, name)
            remove(self.api, self.plural, namespace, name)
            return
        if expired == "Retain":
            remove(self.api, PODS, namespace, name)
        elif self.release.runs(sandbox):
            self._ensure_volumes(sandbox)
            if get(self.api, PODS, namespace, name) is None:
                self.api.put(PODS, self._pod(sandbox))
        else:
            remove(self.api, PODS, namespace, name)
        self._write_status(sandbox, expired is not None)

    # -- expiry --------------------------------------------------------------------------
    def _expired(self, sandbox: Obj) -> str | None:
        """The policy of a shutdown time that has passed (Delete wins over Retain), or None;
        requeues this Sandbox for the next one still ahead."""
        spec = sandbox.get("spec") or {}
        times: list[tuple[datetime, str]] = []
        if own := parse_time(spec.get("shutdownTime")):
            times.append((own, spec.get("shutdownPolicy") or "Retain"))
        claim = self._claim_of(sandbox)
        lifecycle = ((claim or {}).get("spec") or {}).get("lifecycle") or {}
        policy = lifecycle.get("shutdownPolicy") or "Retain"  # assumption: the claim's default
        if policy == "Retain" and (claim_time := parse_time(lifecycle.get("shutdownTime"))):
            times.append((claim_time, "Retain"))
        moment = now()
        passed = {policy for at, policy in times if at <= moment}
        ahead = [at for at, _ in times if at > moment]
        if ahead:
            self.requeue_after(key_of(sandbox), (min(ahead) - moment).total_seconds())
        if "Delete" in passed:
            return "Delete"
        return "Retain" if passed else None

    def _claim_of(self, sandbox: Obj) -> Obj | None:
        ref = controller_of(sandbox)
        if ref is None or ref.get("kind") != "SandboxClaim":
            return None
        claim = get(self.api, "sandboxclaims", key_of(sandbox)[0], str(ref.get("name")))
        if claim is None or claim["metadata"].get("uid") != ref.get("uid"):
            return None
        return claim

    # -- the pod and its volumes ---------------------------------------------------------
    def _ensure_volumes(self, sandbox: Obj) -> None:
        namespace, name = key_of(sandbox)
        for template in (sandbox.get("spec") or {}).get("volumeClaimTemplates") or []:
            claim_name = pvc_name(template, name)
            if get(self.api, PVCS, namespace, claim_name) is not None:
                continue
            template_meta = template.get("metadata") or {}
            metadata: Obj = {"name": claim_name, "namespace": namespace}
            metadata["uid"] = str(uuid.uuid4())
            metadata["labels"] = dict(template_meta.get("labels") or {})
            metadata["ownerReferences"] = [self._owner(sandbox)]
            pvc: Obj = {"apiVersion": "v1", "kind": "PersistentVolumeClaim"}
            pvc["metadata"] = metadata
            pvc["spec"] = copy.deepcopy(template.get("spec") or {})
            pvc["status"] = {"phase": "Bound"}
            self.api.put(PVCS, pvc)

    def _pod(self, sandbox: Obj) -> Obj:
        namespace, name = key_of(sandbox)
        template = (sandbox.get("spec") or {}).get("podTemplate") or {}
        template_meta = template.get("metadata") or {}
        spec = copy.deepcopy(template.get("spec") or {})
        claims = (sandbox.get("spec") or {}).get("volumeClaimTemplates") or []
        if claims:
            volumes = {v.get("name"): v for v in spec.get("volumes") or []}
            for claim in claims:
                volume_name = (claim.get("metadata") or {}).get("name", "volume")
                source = {"claimName": pvc_name(claim, name)}
                volumes[volume_name] = {"name": volume_name, "persistentVolumeClaim": source}
            spec["volumes"] = list(volumes.values())
        spec.setdefault("restartPolicy", "Always")
        spec["nodeName"] = NODE_NAME  # no scheduler: bound to the one node at creation
        labels = {**(template_meta.get("labels") or {}), NAME_HASH_LABEL: name_hash(name)}
        metadata: Obj = {"name": name, "namespace": namespace, "uid": str(uuid.uuid4())}
        metadata["labels"] = labels
        metadata["annotations"] = dict(template_meta.get("annotations") or {})
        metadata["ownerReferences"] = [self._owner(sandbox)]
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": metadata,
            "spec": spec,
            "status": {"phase": "Pending"},
        }

    def _owner(self, sandbox: Obj) -> Obj:
        return owner_reference(sandbox, self.release.sandbox_api_version, "Sandbox")

    # -- status --------------------------------------------------------------------------
    def _write_status(self, sandbox: Obj, expired: bool) -> None:
        namespace, name = key_of(sandbox)
        pod = get(self.api, PODS, namespace, name)
        status = dict(sandbox.get("status") or {})
        status.pop("podIPs", None)
        status["replicas"] = 0 if pod is None else 1
        status["selector"] = f"{NAME_HASH_LABEL}={name_hash(name)}"
        if (sandbox.get("spec") or {}).get("service"):
            status["serviceFQDN"] = f"{name}.{namespace}.svc.cluster.local"
        if expired:
            status = with_condition(status, "Ready", False, "SandboxExpired", "shutdownTime")
        elif not self.release.runs(sandbox):
            # assumption: the reason upstream gives a scaled-down Sandbox
            status = with_condition(status, "Ready", False, "SandboxSuspended", "scaled down")
        elif pod is not None and pod_is_ready(pod):
            status["podIPs"] = [pod["status"]["podIP"]]
            status = with_condition(status, "Ready", True, "DependenciesReady", "")
        else:
            message = "Pod does not exist" if pod is None else "Pod is not ready"
            status = with_condition(status, "Ready", False, "DependenciesNotReady", message)
        updated = copy.deepcopy(sandbox)
        annotations = updated["metadata"].setdefault("annotations", {})
        annotations[POD_NAME_ANNOTATION] = name
        updated["status"] = status
        write(self.api, self.plural, updated)
