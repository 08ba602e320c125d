"""Render k8s/base without kubectl or kustomize: the few kustomize steps the base uses.

The base sticks to `namespace`, `resources` (plain files) and `configMapGenerator` with
`files`, so rendering is: load every listed file, generate the ConfigMaps with kustomize's
content-hash suffix, point the pod specs at the suffixed names, and set the namespace on
namespaced objects. Anything else in kustomization.yaml is refused rather than ignored, so
the base cannot grow a feature this renderer silently skips. Where `kubectl` is installed,
a test checks the result equals `kubectl kustomize`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "k8s" / "base"
# What goes in AgentCube's namespace, a kustomization of its own (see its comment).
AGENTCUBE_NAMESPACE_DIR = REPO / "k8s" / "agentcube-namespace"
EXAMPLES = REPO / "k8s" / "examples"

SUPPORTED_FIELDS = frozenset({"apiVersion", "kind", "namespace", "resources", "configMapGenerator"})
CLUSTER_SCOPED = frozenset(
    {
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "CustomResourceDefinition",
    }
)

Object = dict[str, Any]


def load_documents(path: Path) -> list[Object]:
    with path.open() as stream:
        return [document for document in yaml.safe_load_all(stream) if document]


def _go_json(value: object) -> str:
    """encoding/json.Marshal: sorted keys, no spaces, HTML characters escaped."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for char, escape in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escape)
    return text


def kustomize_hash(config_map: Object) -> str:
    """kustomize's name suffix for a generated ConfigMap (api/hasher).

    kustomize v5 hashes the generated object before it has a name: the encoded name is "".
    """
    encoded = {"kind": "ConfigMap", "name": "", "data": config_map.get("data", {})}
    digest = hashlib.sha256(_go_json(encoded).encode()).hexdigest()[:10]
    return digest.translate(str.maketrans({"0": "g", "1": "h", "3": "k", "a": "m", "e": "t"}))


def _generate(base: Path, spec: Object) -> tuple[str, Object]:
    if set(spec) - {"name", "files"}:
        raise ValueError(f"configMapGenerator fields {sorted(spec)} beyond name/files")
    data = {Path(name).name: (base / name).read_text() for name in spec["files"]}
    config_map: Object = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": spec["name"]},
        "data": data,
    }
    config_map["metadata"]["name"] = f"{spec['name']}-{kustomize_hash(config_map)}"
    return spec["name"], config_map


def _rename_config_maps(pod_spec: Object, names: dict[str, str]) -> None:
    for volume in pod_spec.get("volumes", []):
        if "configMap" in volume:
            ref = volume["configMap"]
            ref["name"] = names.get(ref["name"], ref["name"])
    for container in pod_spec.get("containers", []) + pod_spec.get("initContainers", []):
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                ref = source["configMapRef"]
                ref["name"] = names.get(ref["name"], ref["name"])
        for variable in container.get("env", []):
            ref = variable.get("valueFrom", {}).get("configMapKeyRef")
            if ref is not None:
                ref["name"] = names.get(ref["name"], ref["name"])


def render(base: Path = BASE) -> list[Object]:
    kustomization = load_documents(base / "kustomization.yaml")[0]
    unsupported = set(kustomization) - SUPPORTED_FIELDS
    if unsupported:
        raise ValueError(f"kustomization.yaml uses {sorted(unsupported)}; teach render.py first")
    objects: list[Object] = []
    for resource in kustomization.get("resources", []):
        objects.extend(load_documents(base / resource))
    renamed: dict[str, str] = {}
    for spec in kustomization.get("configMapGenerator", []):
        original, config_map = _generate(base, spec)
        renamed[original] = config_map["metadata"]["name"]
        objects.append(config_map)
    namespace = kustomization.get("namespace")
    for obj in objects:
        if obj["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
            _rename_config_maps(obj["spec"]["template"]["spec"], renamed)
        if namespace and obj["kind"] not in CLUSTER_SCOPED:
            obj["metadata"]["namespace"] = namespace
        if namespace and obj["kind"] in {"RoleBinding", "ClusterRoleBinding"}:
            for subject in obj.get("subjects", []):
                if subject["kind"] == "ServiceAccount":
                    subject["namespace"] = namespace
    return objects


def render_install() -> list[Object]:
    """Everything an install applies: k8s/base and k8s/agentcube-namespace."""
    return render(BASE) + render(AGENTCUBE_NAMESPACE_DIR)


def key(obj: Object) -> tuple[str, str, str]:
    return (obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"])


def by_key(objects: list[Object]) -> dict[tuple[str, str, str], Object]:
    indexed = {key(obj): obj for obj in objects}
    if len(indexed) != len(objects):
        raise ValueError("two objects share kind, namespace and name")
    return indexed
