"""agent-sandbox's SandboxWarmPool controller (extensions).

A pool keeps `spec.replicas` unclaimed Sandboxes made from `spec.sandboxTemplateRef`'s
SandboxTemplate, named `<pool>-<5 random lowercase alphanumerics>` and controlled by the pool.
A claim that adopts one takes over its controller reference (claim_controller.py), so the pool
no longer counts it and makes another. Extra members (the pool shrank) are deleted, those not
Ready first. Status: `replicas` (members) and `readyReplicas` (members whose Ready condition
is True), the two fields the facts name. Without its template the pool makes nothing.
Deleting the pool deletes its unclaimed Sandboxes through the garbage collector.
"""

from __future__ import annotations

import copy

from e2e_k8s.objects import (
    Key,
    Obj,
    Store,
    get,
    in_namespace,
    is_ready,
    key_of,
    new_uid,
    owned_by,
    owner_reference,
    random_suffix,
    remove,
    write,
)
from e2e_k8s.reconciling import Controller, Mapper
from e2e_k8s.versions import AgentSandbox

SANDBOXES, TEMPLATES = "sandboxes", "sandboxtemplates"


class WarmPoolController(Controller):
    plural = "sandboxwarmpools"

    def __init__(self, api: Store, delay_s: float, release: AgentSandbox) -> None:
        super().__init__(api, delay_s)
        self.release = release

    def watches(self) -> dict[str, Mapper]:
        # A member may have just left by adoption, when its owner no longer names the pool:
        # every pool of the namespace looks again (a handful at most in tests).
        def pools_of(obj: Obj) -> list[Key]:
            return [key_of(pool) for pool in in_namespace(self.api, self.plural, key_of(obj)[0])]

        return {SANDBOXES: pools_of, TEMPLATES: pools_of}

    def reconcile(self, key: Key) -> None:
        pool = get(self.api, self.plural, *key)
        if pool is None:
            return
        namespace = key[0]
        spec = pool.get("spec") or {}
        members = [s for s in in_namespace(self.api, SANDBOXES, namespace) if owned_by(s, pool)]
        template_name = (spec.get("sandboxTemplateRef") or {}).get("name", "")
        template = get(self.api, TEMPLATES, namespace, template_name)
        status = dict(pool.get("status") or {})
        if template is None:
            self.log.info("pool %s/%s: SandboxTemplate %r not found", *key, template_name)
        else:
            wanted = int(spec.get("replicas") or 0)
            taken = {key_of(member)[1] for member in members}
            while len(members) < wanted:
                sandbox = self._new_sandbox(pool, template, taken)
                taken.add(sandbox["metadata"]["name"])
                self.api.put(SANDBOXES, sandbox)
                members.append(sandbox)
            if len(members) > wanted:
                members.sort(key=is_ready)  # not Ready first
                for extra in members[: len(members) - wanted]:
                    remove(self.api, SANDBOXES, *key_of(extra))
                members = members[len(members) - wanted :]
        status["replicas"] = len(members)
        status["readyReplicas"] = sum(1 for member in members if is_ready(member))
        pool["status"] = status
        write(self.api, self.plural, pool)

    def _new_sandbox(self, pool: Obj, template: Obj, taken: set[str]) -> Obj:
        namespace, pool_name = key_of(pool)
        name = f"{pool_name}-{random_suffix()}"
        while name in taken or get(self.api, SANDBOXES, namespace, name) is not None:
            name = f"{pool_name}-{random_suffix()}"
        source = template.get("spec") or {}
        spec: Obj = {
            "podTemplate": copy.deepcopy(source.get("podTemplate") or {}),
            **self.release.running_spec(),
        }
        if source.get("volumeClaimTemplates"):
            spec["volumeClaimTemplates"] = copy.deepcopy(source["volumeClaimTemplates"])
        owner = owner_reference(pool, self.release.extensions_api_version, "SandboxWarmPool")
        return {
            "apiVersion": self.release.sandbox_api_version,
            "kind": "Sandbox",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": new_uid(),
                "ownerReferences": [owner],
            },
            "spec": spec,
        }
