"""agent-sandbox's SandboxClaim controller (extensions), as the facts describe it.

Where a claim's Sandbox comes from:
- 0.4.6 (v1alpha1): `spec.sandboxTemplateRef.name` names a SandboxTemplate; the warm pools of
  that template offer their Sandboxes, which may be adopted as soon as they exist.
- 0.5.6 (v1beta1): `spec.warmPoolRef.name` names a SandboxWarmPool, whose template is used.
  A claim converted from v1alpha1 names `shadow-pool-<template>`, which nothing creates: it
  never binds (the upstream behaviour the lifecycle must avoid). Assumption: only Ready warm
  Sandboxes are adopted in 0.5.x.
A claim whose template or pool does not exist stays unbound, condition Ready False.

Adopting a warm Sandbox: its controller reference moves from the pool to the claim, it gets
the labels `agents.x-k8s.io/claim-uid` and `agents.x-k8s.io/sandbox-name`, and the claim's
`spec.additionalPodMetadata` goes onto its pod template and onto its existing Pod.
With none to adopt, a Sandbox named after the claim is created from the template (plus the
additional metadata), owned by the claim, and `status.sandbox.name` is set in the same
reconcile: the claim names its Sandbox before the Pod exists (the Sandbox controller makes the
Pod after its own delay). A client patching that Pod at once gets 404, as on a cluster.

`spec.lifecycle`: at `shutdownTime`, `Delete` and `DeleteForeground` delete the claim (the
garbage collector takes its Sandbox and Pod with it); `Retain` (assumed default) keeps both
objects, and the Sandbox controller deletes the Pod (assumption). An expired claim does not
bind.
"""

from __future__ import annotations

import copy

from e2e_k8s.objects import (
    CLAIM_UID_LABEL,
    POD_NAME_ANNOTATION,
    SANDBOX_NAME_LABEL,
    Key,
    Obj,
    Store,
    controller_of,
    get,
    in_namespace,
    is_ready,
    key_of,
    merged_metadata,
    new_uid,
    now,
    owned_by,
    owner_reference,
    parse_time,
    remove,
    with_condition,
    write,
)
from e2e_k8s.reconciling import Controller, Mapper
from e2e_k8s.versions import AgentSandbox

SANDBOXES, POOLS, TEMPLATES = "sandboxes", "sandboxwarmpools", "sandboxtemplates"


class Unbound(Exception):
    """Why a claim cannot get a Sandbox now: (condition reason, message)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class ClaimController(Controller):
    plural = "sandboxclaims"

    def __init__(self, api: Store, delay_s: float, release: AgentSandbox) -> None:
        super().__init__(api, delay_s)
        self.release = release

    def watches(self) -> dict[str, Mapper]:
        def sandbox_changed(sandbox: Obj) -> list[Key]:
            namespace = key_of(sandbox)[0]
            ref = controller_of(sandbox) or {}
            if ref.get("kind") == "SandboxClaim":
                return [(namespace, str(ref.get("name")))]
            return self._unbound(namespace) if ref.get("kind") == "SandboxWarmPool" else []

        def source_changed(obj: Obj) -> list[Key]:
            return self._unbound(key_of(obj)[0])

        return {SANDBOXES: sandbox_changed, POOLS: source_changed, TEMPLATES: source_changed}

    def _unbound(self, namespace: str) -> list[Key]:
        return [
            key_of(claim)
            for claim in in_namespace(self.api, self.plural, namespace)
            if not ((claim.get("status") or {}).get("sandbox") or {}).get("name")
        ]

    def reconcile(self, key: Key) -> None:
        claim = get(self.api, self.plural, *key)
        if claim is None:
            return
        lifecycle = (claim.get("spec") or {}).get("lifecycle") or {}
        expired = False
        if at := parse_time(lifecycle.get("shutdownTime")):
            if at <= now():
                if lifecycle.get("shutdownPolicy") in ("Delete", "DeleteForeground"):
                    self.log.info("claim %s/%s: shutdownTime reached, deleting it", *key)
                    remove(self.api, self.plural, *key)
                    return
                expired = True
            else:
                self.requeue_after(key, (at - now()).total_seconds())
        status = dict(claim.get("status") or {})
        bound = (status.get("sandbox") or {}).get("name")
        unbound: Unbound | None = None
        if not bound and not expired:
            try:
                bound = self._bind(claim)
            except Unbound as why:
                unbound = why
        if bound:
            status["sandbox"] = {"name": bound}
        sandbox = get(self.api, SANDBOXES, key[0], bound) if bound else None
        if expired:
            status = with_condition(status, "Ready", False, "ClaimExpired", "shutdownTime")
        elif unbound is not None:
            status = with_condition(status, "Ready", False, unbound.reason, unbound.message)
        elif sandbox is None:
            status = with_condition(status, "Ready", False, "SandboxNotFound", str(bound))
        elif is_ready(sandbox):
            status = with_condition(status, "Ready", True, "SandboxReady", "")
        else:
            status = with_condition(status, "Ready", False, "SandboxNotReady", "")
        claim["status"] = status
        write(self.api, self.plural, claim)

    # -- binding -------------------------------------------------------------------------
    def _bind(self, claim: Obj) -> str:
        """Adopt a warm Sandbox or create one; its name. Raises Unbound."""
        template, pools = self._source(claim)
        namespace, name = key_of(claim)
        warm = [
            sandbox
            for sandbox in in_namespace(self.api, SANDBOXES, namespace)
            if any(owned_by(sandbox, pool) for pool in pools)
        ]
        ready = [sandbox for sandbox in warm if is_ready(sandbox)]
        candidates = ready + [s for s in warm if not is_ready(s)]
        if not self.release.adopts_before_ready:
            candidates = ready
        if candidates:
            return self._adopt(claim, copy.deepcopy(candidates[0]))
        existing = get(self.api, SANDBOXES, namespace, name)
        if existing is not None and not owned_by(existing, claim):
            raise Unbound("SandboxNameConflict", f'a Sandbox "{name}" already exists')
        if existing is None:
            self.api.put(SANDBOXES, self._new_sandbox(claim, template))
        return name

    def _source(self, claim: Obj) -> tuple[Obj, list[Obj]]:
        """The template a new Sandbox is made from and the pools that may offer one."""
        namespace = key_of(claim)[0]
        spec = claim.get("spec") or {}
        if self.release.claims_name_a_pool:
            pool_name = (spec.get("warmPoolRef") or {}).get("name", "")
            pool = get(self.api, POOLS, namespace, pool_name)
            if pool is None:
                raise Unbound("WarmPoolNotFound", f'SandboxWarmPool "{pool_name}" not found')
            template_name = ((pool.get("spec") or {}).get("sandboxTemplateRef") or {}).get("name")
            pools = [pool]
        else:
            template_name = (spec.get("sandboxTemplateRef") or {}).get("name", "")
            pools = [
                pool
                for pool in in_namespace(self.api, POOLS, namespace)
                if ((pool.get("spec") or {}).get("sandboxTemplateRef") or {}).get("name")
                == template_name
            ]
        template = get(self.api, TEMPLATES, namespace, str(template_name))
        if template is None:
            raise Unbound("TemplateNotFound", f'SandboxTemplate "{template_name}" not found')
        return template, pools

    def _owner(self, claim: Obj) -> Obj:
        return owner_reference(claim, self.release.extensions_api_version, "SandboxClaim")

    def _claim_labels(self, claim: Obj, sandbox_name: str) -> dict[str, str]:
        return {CLAIM_UID_LABEL: claim["metadata"].get("uid", ""), SANDBOX_NAME_LABEL: sandbox_name}

    def _adopt(self, claim: Obj, sandbox: Obj) -> str:
        namespace, name = key_of(sandbox)
        extra = (claim.get("spec") or {}).get("additionalPodMetadata") or {}
        metadata = sandbox["metadata"]
        refs = [r for r in metadata.get("ownerReferences") or [] if not r.get("controller")]
        metadata["ownerReferences"] = [*refs, self._owner(claim)]
        metadata["labels"] = {**(metadata.get("labels") or {}), **self._claim_labels(claim, name)}
        template = sandbox.setdefault("spec", {}).setdefault("podTemplate", {})
        template["metadata"] = merged_metadata(template.get("metadata") or {}, extra)
        self.api.put(SANDBOXES, sandbox)
        pod_name = (metadata.get("annotations") or {}).get(POD_NAME_ANNOTATION) or name
        pod = get(self.api, "pods", namespace, pod_name)
        if pod is not None:
            pod["metadata"] = merged_metadata(pod["metadata"], extra)
            write(self.api, "pods", pod)
        self.log.info("claim %s/%s adopted sandbox %s", namespace, key_of(claim)[1], name)
        return name

    def _new_sandbox(self, claim: Obj, template: Obj) -> Obj:
        namespace, name = key_of(claim)
        extra = (claim.get("spec") or {}).get("additionalPodMetadata") or {}
        source = template.get("spec") or {}
        pod_template = copy.deepcopy(source.get("podTemplate") or {})
        pod_template["metadata"] = merged_metadata(pod_template.get("metadata") or {}, extra)
        spec: Obj = {"podTemplate": pod_template, **self.release.running_spec()}
        if source.get("volumeClaimTemplates"):
            spec["volumeClaimTemplates"] = copy.deepcopy(source["volumeClaimTemplates"])
        metadata: Obj = {"name": name, "namespace": namespace, "uid": new_uid()}
        metadata["labels"] = self._claim_labels(claim, name)
        metadata["ownerReferences"] = [self._owner(claim)]
        self.log.info("claim %s/%s: no warm sandbox, creating one", namespace, name)
        return {
            "apiVersion": self.release.sandbox_api_version,
            "kind": "Sandbox",
            "metadata": metadata,
            "spec": spec,
        }
