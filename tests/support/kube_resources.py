"""What the fake API (kubeapi.py) serves: one `Resource` per plural, built from a
CustomResourceDefinition (`crd_resource`) or for a built-in kind (`builtin_resource`), and
the discovery documents that list them, which clients read to choose a version.

Discovery prefers each group's storage version and lists the others in Kubernetes' version
order (GA, then beta, then alpha), which is what a client choosing "the newest served
version" of agent-sandbox sees on a real cluster.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .kube_builtin import BUILTIN_SCHEMAS
from .kube_schema import Schema, structural_problems

Obj = dict[str, Any]
KINDS = {
    "secrets": "Secret",
    "configmaps": "ConfigMap",
    "pods": "Pod",
    "services": "Service",
    "persistentvolumeclaims": "PersistentVolumeClaim",
    "sandboxes": "Sandbox",
    "sandboxclaims": "SandboxClaim",
    "sandboxtemplates": "SandboxTemplate",
    "sandboxwarmpools": "SandboxWarmPool",
    "codeinterpreters": "CodeInterpreter",
}
WRITE_VERBS = ["create", "delete", "get", "list", "patch", "watch"]  # no PUT, no apply


@dataclass
class Resource:
    """One served resource: its versions, their schemas, and how it is written."""

    plural: str
    group: str
    kind: str
    singular: str
    storage: str
    served: list[str]
    schemas: dict[str, Schema | None]  # version -> openAPIV3Schema; None: no schema
    crd: bool = False
    status_subresource: bool = False
    writable: bool = False
    deprecations: dict[str, str] = field(default_factory=dict)  # version -> Warning text

    def api_version(self, version: str) -> str:
        return f"{self.group}/{version}" if self.group else version

    @property
    def qualified_kind(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def qualified_plural(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


def builtin_resource(plural: str, group: str, version: str, writable: bool) -> Resource:
    """The lenient endpoints of `FakeApi.install`: no schema but a built-in kind's top level."""
    kind = KINDS.get(plural, plural.removesuffix("s").capitalize())
    schema = BUILTIN_SCHEMAS.get(plural) if not group else None
    return Resource(
        plural,
        group,
        kind,
        kind.lower(),
        version,
        [version],
        {version: schema},
        status_subresource=plural == "pods",
        writable=writable,
    )


def crd_resource(crd: Obj) -> Resource:
    """A CustomResourceDefinition (apiextensions.k8s.io/v1, namespaced, one storage version,
    structural schemas) as a writable resource; ValueError says what is wrong with it."""
    if crd.get("apiVersion") != "apiextensions.k8s.io/v1" or crd.get("kind") != (
        "CustomResourceDefinition"
    ):
        raise ValueError("not an apiextensions.k8s.io/v1 CustomResourceDefinition")
    name, spec = crd["metadata"]["name"], crd["spec"]
    if spec.get("scope") != "Namespaced":
        raise ValueError(f"{name}: only namespaced CRDs are served")
    versions: list[Obj] = spec["versions"]
    storage = [version for version in versions if version.get("storage")]
    if len(storage) != 1:
        raise ValueError(f"{name}: exactly one version must be the storage version")
    schemas: dict[str, Schema | None] = {}
    for version in versions:
        schema = version["schema"]["openAPIV3Schema"]
        problems = structural_problems(schema)
        if problems:
            raise ValueError(f"{name} {version['name']} is not structural: {problems}")
        schemas[version["name"]] = schema
    group, kind, stored = spec["group"], spec["names"]["kind"], storage[0]["name"]
    deprecations = {
        version["name"]: version.get("deprecationWarning")
        or f"{group}/{version['name']} {kind} is deprecated; use {group}/{stored} {kind}"
        for version in versions
        if version.get("deprecated")
    }
    return Resource(
        spec["names"]["plural"],
        group,
        kind,
        spec["names"].get("singular", kind.lower()),
        stored,
        [version["name"] for version in versions if version.get("served")],
        schemas,
        crd=True,
        writable=True,
        deprecations=deprecations,
        status_subresource="status" in (storage[0].get("subresources") or {}),
    )


def version_priority(version: str) -> tuple[int, int, int]:
    """Kubernetes' version order as a sort key: GA, beta, alpha; higher numbers first."""
    match = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if match is None:
        return (3, 0, 0)
    major, stage, minor = match.groups()
    rank = {None: 0, "beta": 1, "alpha": 2}[stage]
    return (rank, -int(major), -int(minor or 0))


# -- discovery documents ------------------------------------------------------------------
def core_versions(port: int | None) -> Obj:
    """GET /api."""
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{port}"}
        ],
    }


def _groups(resources: Iterable[Resource]) -> dict[str, list[str]]:
    """group -> its served versions, the preferred (storage) one first."""
    groups: dict[str, list[str]] = {}
    for resource in resources:
        if not resource.group:
            continue
        versions = groups.setdefault(resource.group, [resource.storage])
        for version in sorted(resource.served, key=version_priority):
            if version not in versions:
                versions.append(version)
    return groups


def _group(name: str, versions: list[str]) -> Obj:
    listed = [{"groupVersion": f"{name}/{version}", "version": version} for version in versions]
    return {"name": name, "versions": listed, "preferredVersion": listed[0]}


def group_list(resources: Iterable[Resource]) -> Obj:
    """GET /apis: every group with a served resource."""
    groups = [_group(name, versions) for name, versions in _groups(resources).items()]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def group(resources: Iterable[Resource], name: str) -> Obj | None:
    """GET /apis/{group}, or None when nothing of that group is served."""
    versions = _groups(resources).get(name)
    if versions is None:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(name, versions)}


def resource_list(resources: Iterable[Resource], group: str, version: str) -> Obj | None:
    """GET /api/v1 or /apis/{group}/{version}, or None when that version is not served."""
    entries: list[Obj] = []
    for resource in resources:
        if resource.group != group or version not in resource.served:
            continue
        entries.append(
            {
                "name": resource.plural,
                "singularName": resource.singular,
                "namespaced": True,
                "kind": resource.kind,
                "verbs": WRITE_VERBS if resource.writable else ["list", "watch"],
            }
        )
        if resource.status_subresource and resource.writable:
            entries.append(
                {
                    "name": f"{resource.plural}/status",
                    "singularName": "",
                    "namespaced": True,
                    "kind": resource.kind,
                    "verbs": ["get", "patch"],
                }
            )
    if not entries and group:
        return None
    group_version = f"{group}/{version}" if group else version
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": entries,
    }
