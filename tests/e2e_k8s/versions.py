"""The agent-sandbox releases the fake cluster can be: which CRDs it installs and the shape of
the objects in its storage version (notes/agent-sandbox-facts.md).

- 0.4.6 (what AgentCube pins): v1alpha1 only. A Sandbox runs with `spec.replicas: 1` and is
  scaled down with 0; a claim names a SandboxTemplate in `spec.sandboxTemplateRef.name`.
- 0.5.6: v1beta1 is the storage version (v1alpha1 is served through conversion by the fake
  API). A Sandbox has `spec.operatingMode: Running | Suspended`; a claim names a warm pool in
  `spec.warmPoolRef.name`, and the template comes from that pool.

The controllers read and write storage-version objects only: the API converts what clients
send through another served version.
"""

from __future__ import annotations

from dataclasses import dataclass

from e2e_k8s.objects import Obj

SANDBOX_GROUP = "agents.x-k8s.io"
EXTENSIONS_GROUP = "extensions.agents.x-k8s.io"


@dataclass(frozen=True)
class AgentSandbox:
    release: str  # "0.4.6"
    storage_version: str  # "v1alpha1" or "v1beta1"

    @property
    def crds(self) -> str:
        """The name of its CRD file for `support.crds.load_crds`."""
        return f"agent-sandbox-v{self.release}"

    @property
    def sandbox_api_version(self) -> str:
        return f"{SANDBOX_GROUP}/{self.storage_version}"

    @property
    def extensions_api_version(self) -> str:
        return f"{EXTENSIONS_GROUP}/{self.storage_version}"

    @property
    def operating_mode(self) -> bool:
        """Whether Sandboxes say Running/Suspended (v1beta1) rather than replicas 1/0."""
        return self.storage_version != "v1alpha1"

    @property
    def claims_name_a_pool(self) -> bool:
        """Whether a claim names a warm pool (v1beta1) rather than a template (v1alpha1)."""
        return self.storage_version != "v1alpha1"

    @property
    def adopts_before_ready(self) -> bool:
        """v0.4.6 lets a claim adopt a warm sandbox as soon as it exists (the facts). Assumption:
        0.5.x adopts only Ready ones and creates a Sandbox for the claim otherwise."""
        return self.release.startswith("0.4.")

    def runs(self, sandbox: Obj) -> bool:
        """Whether the Sandbox should have its pod. Absent fields take the CRD defaults
        (replicas 1; operatingMode Running, an assumption of the test CRDs)."""
        spec = sandbox.get("spec") or {}
        if self.operating_mode:
            return bool(spec.get("operatingMode", "Running") == "Running")
        return int(spec.get("replicas", 1)) == 1

    def running_spec(self, running: bool = True) -> Obj:
        """The spec fields that make a new Sandbox run (or stay scaled down)."""
        if self.operating_mode:
            return {"operatingMode": "Running" if running else "Suspended"}
        return {"replicas": 1 if running else 0}


RELEASES = {
    "0.4.6": AgentSandbox("0.4.6", "v1alpha1"),
    "0.5.6": AgentSandbox("0.5.6", "v1beta1"),
}
