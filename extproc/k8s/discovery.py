"""Which agent-sandbox API version this cluster serves, found through API discovery.

agent-sandbox v0.4.x serves only v1alpha1. From v0.5.0, v1beta1 is the storage version and
v1alpha1 is served through a conversion webhook that rewrites a v1alpha1 claim's
`sandboxTemplateRef` into `warmPoolRef: shadow-pool-<template>`, a pool that does not
exist, so such a claim never binds. So we speak v1beta1 wherever it is served and v1alpha1
only where it is the one version: the preferred version is not trusted, because a cluster
mid-upgrade may still prefer v1alpha1 while converting claims.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubernetes.client import ApiClient, ApisApi
from kubernetes.client.exceptions import ApiException

from extproc.core.errors import Unavailable
from extproc.k8s.resources import Kind

SANDBOX_GROUP = "agents.x-k8s.io"
EXTENSIONS_GROUP = "extensions.agents.x-k8s.io"
V1ALPHA1 = "v1alpha1"
V1BETA1 = "v1beta1"
VERSIONS = (V1BETA1, V1ALPHA1)  # most preferred first


@dataclass(frozen=True, slots=True)
class AgentSandboxKinds:
    version: str
    sandbox: Kind
    claim: Kind
    template: Kind
    warm_pool: Kind

    @property
    def beta(self) -> bool:
        return self.version == V1BETA1


def kinds_for(version: str) -> AgentSandboxKinds:
    if version not in VERSIONS:
        raise ValueError(f"agent-sandbox API version must be one of {VERSIONS}, not {version!r}")
    return AgentSandboxKinds(
        version=version,
        sandbox=Kind(SANDBOX_GROUP, version, "sandboxes", "Sandbox"),
        claim=Kind(EXTENSIONS_GROUP, version, "sandboxclaims", "SandboxClaim"),
        template=Kind(EXTENSIONS_GROUP, version, "sandboxtemplates", "SandboxTemplate"),
        warm_pool=Kind(EXTENSIONS_GROUP, version, "sandboxwarmpools", "SandboxWarmPool"),
    )


def served_versions(client: ApiClient) -> dict[str, set[str]]:
    """group name -> the versions it serves (blocking: one GET /apis)."""
    try:
        groups = ApisApi(client).get_api_versions(_request_timeout=(5.0, 30.0))
    except ApiException as error:
        raise Unavailable(f"API discovery (GET /apis): HTTP {error.status}") from error
    return {
        group.name: {version.version for version in group.versions or ()}
        for group in groups.groups or ()
    }


def discover(client: ApiClient, wanted: str = "auto") -> AgentSandboxKinds:
    """The kinds to speak: `wanted` if it is a version (checked against what is served), else
    v1beta1 when both agent-sandbox groups serve it, else v1alpha1. Unavailable when
    agent-sandbox is not installed, with a message saying so."""
    served = served_versions(client)
    sandbox, extensions = served.get(SANDBOX_GROUP, set()), served.get(EXTENSIONS_GROUP, set())
    if not sandbox or not extensions:
        raise Unavailable(
            f"agent-sandbox is not installed: API groups {SANDBOX_GROUP} and {EXTENSIONS_GROUP} "
            "are not served by this cluster"
        )
    if wanted != "auto":
        if wanted not in sandbox or wanted not in extensions:
            raise Unavailable(
                f"agent-sandbox API version {wanted} is not served (served: "
                f"{', '.join(sorted(sandbox & extensions)) or 'none in common'})"
            )
        return kinds_for(wanted)
    for version in VERSIONS:
        if version in sandbox and version in extensions:
            return kinds_for(version)
    raise Unavailable(
        f"agent-sandbox serves {', '.join(sorted(sandbox | extensions))}; this gateway speaks "
        f"{' and '.join(VERSIONS)}"
    )
