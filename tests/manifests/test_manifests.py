"""k8s/base renders, and every object is valid against the Kubernetes JSON schemas, offline.

Schemas come from the pinned `kubernetes-validate` package (it ships them); validation is
strict, so an unknown or misspelt field fails. 1.30 is the oldest Kubernetes the base
supports (ValidatingAdmissionPolicy v1); the newest shipped schema is checked as well.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from typing import Any

import kubernetes_validate
import pytest
import yaml

from manifests.render import (
    AGENTCUBE_NAMESPACE_DIR,
    BASE,
    CLUSTER_SCOPED,
    EXAMPLES,
    REPO,
    by_key,
    load_documents,
    render,
)

VERSIONS = ("1.30", kubernetes_validate.utils.latest_version())


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return render()


def _validate(obj: dict[str, Any], version: str) -> None:
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        where = ".".join(str(part) for part in error.path)
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        pytest.fail(f"{name} is invalid for Kubernetes {version} at {where}: {error.message}")


@pytest.mark.parametrize("version", VERSIONS)
def test_every_base_object_validates_strictly(objects: list[dict[str, Any]], version: str) -> None:
    assert objects
    for obj in objects:
        _validate(obj, version)


@pytest.mark.parametrize("version", VERSIONS)
def test_the_agentcube_namespace_objects_validate_and_stay_there(version: str) -> None:
    objects = render(AGENTCUBE_NAMESPACE_DIR)
    assert sorted((o["kind"], o["metadata"]["namespace"]) for o in objects) == [
        ("NetworkPolicy", "agentcube"), ("Role", "agentcube"), ("RoleBinding", "agentcube")
    ]  # fmt: skip
    for obj in objects:
        _validate(obj, version)


def test_the_validator_is_strict(objects: list[dict[str, Any]]) -> None:
    deployment = copy.deepcopy(next(o for o in objects if o["kind"] == "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFileSystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[0], strict=True)


def test_the_base_has_what_issue_5_lists(objects: list[dict[str, Any]]) -> None:
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in objects)
    assert kinds == sorted(
        [
            ("Namespace", "agentcube-system"),
            ("ServiceAccount", "agentcube-e2b-edge"),
            ("ServiceAccount", "agentcube-e2b-lifecycle"),
            ("Role", "agentcube-e2b-edge"),
            ("RoleBinding", "agentcube-e2b-edge"),
            ("ClusterRole", "agentcube-e2b-edge-directory"),
            ("ClusterRoleBinding", "agentcube-e2b-edge-directory"),
            ("ClusterRole", "agentcube-e2b-lifecycle"),
            ("ClusterRoleBinding", "agentcube-e2b-lifecycle"),
            ("Role", "agentcube-e2b-lifecycle-secrets"),
            ("RoleBinding", "agentcube-e2b-lifecycle-secrets"),
            ("ValidatingAdmissionPolicy", "agentcube-e2b-lifecycle-secrets"),
            ("ValidatingAdmissionPolicyBinding", "agentcube-e2b-lifecycle-secrets"),
            ("Deployment", "agentcube-e2b-edge"),
            ("PodDisruptionBudget", "agentcube-e2b-edge"),
            ("Deployment", "agentcube-e2b-lifecycle"),
            ("Service", "agentcube-e2b-edge"),
            ("Service", "agentcube-e2b-lifecycle"),
            ("NetworkPolicy", "agentcube-e2b-edge"),
            ("NetworkPolicy", "agentcube-e2b-lifecycle"),
            ("ConfigMap", next(n for k, n in kinds if k == "ConfigMap")),
        ]
    )
    for obj in objects:
        namespace = obj["metadata"].get("namespace")
        assert namespace == (None if obj["kind"] in CLUSTER_SCOPED else "agentcube-system")


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("directory", [BASE, AGENTCUBE_NAMESPACE_DIR], ids=lambda path: path.name)
def test_render_equals_kubectl_kustomize(directory: Any) -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(directory)],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    theirs = [o for o in yaml.safe_load_all(out) if o]
    for obj in theirs:
        # kustomize's built-in schema predates ValidatingAdmissionPolicy v1 and so treats it
        # as namespaced; the API server ignores a namespace on a cluster-scoped object.
        if obj["kind"] in CLUSTER_SCOPED:
            obj["metadata"].pop("namespace", None)
    assert by_key(theirs) == by_key(render(directory))


def test_pod_security(objects: list[dict[str, Any]]) -> None:
    """Non-root, no privilege escalation, read-only root, no capabilities, sized, probed."""
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    assert len(deployments) == 2
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["containers"]:
            name = f"{deployment['metadata']['name']}/{container['name']}"
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            assert set(container["resources"]) == {"requests", "limits"}, name
            assert "memory" in container["resources"]["limits"], name
            assert "readinessProbe" in container, name
            assert "livenessProbe" in container, name


def _containers(objects: list[dict[str, Any]], deployment: str) -> dict[str, dict[str, Any]]:
    found = by_key(objects)["Deployment", "agentcube-system", deployment]
    return {c["name"]: c for c in found["spec"]["template"]["spec"]["containers"]}


def test_probes_reach_what_they_claim(objects: list[dict[str, Any]]) -> None:
    edge = _containers(objects, "agentcube-e2b-edge")
    lifecycle = _containers(objects, "agentcube-e2b-lifecycle")["lifecycle"]
    envoy_ready = edge["envoy"]["readinessProbe"]["exec"]["command"]
    assert "http://127.0.0.1:9901/ready" in envoy_ready[2]
    for kind in ("readinessProbe", "livenessProbe"):
        edge_health = edge["edge"][kind]["exec"]["command"]
        # kubelet's own gRPC probe dials the pod IP; the edge listens on loopback only
        assert "grpc.insecure_channel('127.0.0.1:9001')" in edge_health[2]
        assert "HealthCheckResponse.SERVING" in edge_health[2]
        # kubelet's gRPC probe cannot speak TLS: the plaintext health-only port
        assert lifecycle[kind]["grpc"] == {"port": 9003}
    for command in (envoy_ready, edge["edge"]["readinessProbe"]["exec"]["command"]):
        assert command[:2] == ["python", "-c"]
        compile(command[2], "<probe>", "exec")


def test_edge_grpc_stays_on_loopback_and_envoy_admin_too(objects: list[dict[str, Any]]) -> None:
    edge = _containers(objects, "agentcube-e2b-edge")
    args = edge["edge"]["command"]
    assert args[args.index("--listen") + 1] == "127.0.0.1:9001"
    config_map = next(o for o in objects if o["kind"] == "ConfigMap")
    envoy = yaml.safe_load(config_map["data"]["envoy.yaml"])
    assert envoy["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    ports = {p["containerPort"] for c in edge.values() for p in c.get("ports", [])}
    assert ports == {8081, 9091}


def test_example_code_interpreter_is_structurally_valid() -> None:
    """CRD-typed: checked against the CodeInterpreter fields AgentCube defines (no schema)."""
    (template,) = load_documents(EXAMPLES / "code-interpreter.yaml")
    assert template["apiVersion"] == "runtime.agentcube.volcano.sh/v1alpha1"
    assert template["kind"] == "CodeInterpreter"
    assert set(template["metadata"]) == {"name", "namespace"}
    spec = template["spec"]
    assert set(spec) <= {
        "ports", "template", "sessionTimeout", "maxSessionDuration", "warmPoolSize", "authMode"
    }  # fmt: skip
    assert spec["authMode"] in {"picod", "none"}
    assert {p["port"] for p in spec["ports"]} == {49983, 49999}
    for port in spec["ports"]:
        assert set(port) <= {"pathPrefix", "name", "port", "protocol"}
        assert isinstance(port["port"], int) and port["protocol"] in {"HTTP", "HTTPS"}
    assert set(spec["template"]) <= {
        "labels", "annotations", "runtimeClassName", "image", "imagePullPolicy",
        "imagePullSecrets", "environment", "command", "args", "resources",
    }  # fmt: skip
    assert spec["template"]["image"]


def test_example_key_documents_are_hash_only_and_parse() -> None:
    from extproc.core.api_keys import is_api_key, parse_key_documents

    secret, config = load_documents(EXAMPLES / "api-keys.yaml")
    for obj in (secret, config):
        _validate(obj, VERSIONS[0])
    index = parse_key_documents(secret, config)
    assert len(index) == 1
    (entry,) = index.entries.values()
    assert entry.namespace == "team-a"
    for path in (REPO / "k8s").rglob("*"):
        if path.is_file():
            words = path.read_text().replace(":", " ").split()
            assert not any(is_api_key(word) for word in words), f"a raw API key in {path}"
