"""RBAC grants the edge and lifecycle service exactly what they need, nothing more.

Every rule reachable from a service account (through any RoleBinding or ClusterRoleBinding
of an install: k8s/base and k8s/agentcube-namespace) is flattened to (scope, apiGroup,
resource, verb, resourceName) and compared with the expected set. "*" as a resource name
means the rule names no object. The Secret names granted are also checked against the ones
the Deployments' flags name, so renaming one without the other fails here.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

import pytest

from manifests.render import render, render_install

Grant = tuple[str, str, str, str, str]
NAMESPACE = "agentcube-system"
AGENTCUBE = "agentcube"
CLUSTER = "cluster"
READ = ("get", "list", "watch")
WATCH = ("list", "watch")
WRITE = ("get", "list", "watch", "create", "patch", "delete")
IDENTITY = "picod-router-identity"
OWN_SECRETS = ("e2b-envd-token-seed", "e2b-object-proof-key", "e2b-lifecycle-tls")
VOLUME_VERBS = ("get", "list", "create", "delete")

EXPECTED: dict[str, set[Grant]] = {
    "agentcube-e2b-edge": {
        # the API key index, by name (informers with a metadata.name field selector)
        *((NAMESPACE, "", "secrets", verb, "e2b-api-keys") for verb in READ),
        *((NAMESPACE, "", "configmaps", verb, "e2b-api-key-config") for verb in READ),
        # read once at start: its lifecycle client certificate, the Sandbox proof key
        (NAMESPACE, "", "secrets", "get", "e2b-lifecycle-tls"),
        (NAMESPACE, "", "secrets", "get", "e2b-object-proof-key"),
        # the key it signs picod JWTs with, in AgentCube's namespace
        (AGENTCUBE, "", "secrets", "get", IDENTITY),
        # the routing directory
        *((CLUSTER, "agents.x-k8s.io", "sandboxes", verb, "*") for verb in WATCH),
        *((CLUSTER, "", "pods", verb, "*") for verb in WATCH),
    },
    "agentcube-e2b-lifecycle": {
        *((CLUSTER, "agents.x-k8s.io", "sandboxes", verb, "*") for verb in WRITE),
        *((CLUSTER, "extensions.agents.x-k8s.io", "sandboxclaims", verb, "*") for verb in WRITE),
        *((CLUSTER, "extensions.agents.x-k8s.io", "sandboxtemplates", v, "*") for v in READ),
        *((CLUSTER, "extensions.agents.x-k8s.io", "sandboxwarmpools", v, "*") for v in READ),
        # templates built with from_image (writes narrowed by the admission policy)
        *((CLUSTER, "runtime.agentcube.volcano.sh", "codeinterpreters", v, "*") for v in WRITE),
        *((CLUSTER, "", "pods", verb, "*") for verb in READ),  # no patch any more
        # per-sandbox Secrets in tenant namespaces (writes narrowed by the admission policy)
        *((CLUSTER, "", "secrets", verb, "*") for verb in ("get", "create", "patch", "delete")),
        # volumes: claims in tenant namespaces (writes narrowed by the same admission policy)
        *((CLUSTER, "", "persistentvolumeclaims", v, "*") for v in VOLUME_VERBS),
        # its own Secrets in our namespace, kept when the ClusterRole is bound per tenant
        *((NAMESPACE, "", "secrets", "get", name) for name in OWN_SECRETS),
        (NAMESPACE, "", "secrets", "create", "*"),
        (AGENTCUBE, "", "secrets", "get", IDENTITY),
    },
}


def _flatten(rules: list[dict[str, Any]], scope: str) -> set[Grant]:
    grants: set[Grant] = set()
    for rule in rules:
        assert "nonResourceURLs" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    for name in rule.get("resourceNames") or ["*"]:
                        grants.add((scope, group, resource, verb, name))
    return grants


def grants_by_account(objects: list[dict[str, Any]]) -> dict[str, set[Grant]]:
    roles = {(o["kind"], o["metadata"]["name"]): o for o in objects if o["kind"].endswith("Role")}
    granted: dict[str, set[Grant]] = {}
    for binding in (o for o in objects if o["kind"].endswith("RoleBinding")):
        ref = binding["roleRef"]
        role = roles[ref["kind"], ref["name"]]
        assert "aggregationRule" not in role
        # a RoleBinding confines even a ClusterRole to its own namespace
        scope = binding["metadata"]["namespace"] if binding["kind"] == "RoleBinding" else CLUSTER
        for subject in binding["subjects"]:
            assert subject["kind"] == "ServiceAccount", subject
            assert subject["namespace"] == NAMESPACE
            granted.setdefault(subject["name"], set()).update(_flatten(role["rules"], scope))
    return granted


def test_no_account_gets_more_or_less_than_listed() -> None:
    assert grants_by_account(render_install()) == EXPECTED


def test_the_base_alone_grants_nothing_in_agentcubes_namespace() -> None:
    """The identity grant comes only from k8s/agentcube-namespace, in AgentCube's namespace
    (k8s/base's `namespace:` would have moved it to ours)."""
    for grants in grants_by_account(render()).values():
        assert all(grant[0] != AGENTCUBE for grant in grants)


@pytest.mark.parametrize("account", sorted(EXPECTED))
def test_no_wildcards(account: str) -> None:
    for grant in grants_by_account(render_install())[account]:
        assert "*" not in grant[1:4], grant


def test_edge_secret_and_configmap_reads_are_by_name_only() -> None:
    """The informers must then list/watch with fieldSelector=metadata.name=<name>."""
    edge = grants_by_account(render_install())["agentcube-e2b-edge"]
    named = {g for g in edge if g[2] in {"secrets", "configmaps"}}
    assert named and all(g[4] != "*" for g in named)
    assert not any(g[3] in {"create", "patch", "update", "delete"} for g in edge)


def _settings(container: str) -> Any:
    """The settings the Deployment's command (and its literal env values) give."""
    for obj in render():
        if obj["kind"] != "Deployment":
            continue
        for spec in obj["spec"]["template"]["spec"]["containers"]:
            if spec["name"] == container:
                module = importlib.import_module(f"extproc.{container}.command")
                parser = argparse.ArgumentParser()
                module.register(parser)
                with pytest.MonkeyPatch.context() as env:
                    for variable in spec.get("env", []):
                        if "value" in variable:
                            env.setenv(variable["name"], variable["value"])
                    env.setenv("POD_NAMESPACE", NAMESPACE)  # the fieldRef's value
                    return module.settings_from_args(parser.parse_args(spec["command"][2:]))
    raise AssertionError(f"no container {container}")


def test_the_secrets_granted_are_the_ones_the_flags_name() -> None:
    grants = grants_by_account(render_install())
    edge, lifecycle = _settings("edge").kubernetes, _settings("lifecycle").kubernetes
    assert edge.namespace == lifecycle.namespace == NAMESPACE
    assert edge.identity_namespace == lifecycle.identity_namespace == AGENTCUBE
    assert edge.lifecycle_tls_secret == lifecycle.lifecycle_tls_secret
    assert edge.proof_secret == lifecycle.proof_secret
    edge_reads = {(g[0], g[4]) for g in grants["agentcube-e2b-edge"]
                  if g[2] == "secrets" and g[3] == "get"}  # fmt: skip
    assert edge_reads >= {
        (edge.namespace, edge.lifecycle_tls_secret), (edge.namespace, edge.proof_secret),
        (edge.identity_namespace, edge.identity_secret),
    }  # fmt: skip
    lifecycle_reads = {(g[0], g[4]) for g in grants["agentcube-e2b-lifecycle"]
                       if g[2] == "secrets" and g[3] == "get" and g[0] != CLUSTER}  # fmt: skip
    assert lifecycle_reads == {
        (lifecycle.namespace, lifecycle.seed_secret), (lifecycle.namespace, lifecycle.proof_secret),
        (lifecycle.namespace, lifecycle.lifecycle_tls_secret),
        (lifecycle.identity_namespace, lifecycle.identity_secret),
    }  # fmt: skip


def test_admission_policy_limits_lifecycle_secret_writes_to_its_own() -> None:
    objects = render()
    (policy,) = [o for o in objects if o["kind"] == "ValidatingAdmissionPolicy"]
    (binding,) = [o for o in objects if o["kind"] == "ValidatingAdmissionPolicyBinding"]
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert "matchResources" not in binding["spec"]  # every namespace
    spec = policy["spec"]
    assert spec["failurePolicy"] == "Fail"
    core, templates = spec["matchConstraints"]["resourceRules"]
    assert (core["apiGroups"], core["resources"]) == ([""], ["secrets", "persistentvolumeclaims"])
    assert (templates["apiGroups"], templates["resources"]) == (
        ["runtime.agentcube.volcano.sh"],
        ["codeinterpreters"],
    )
    # every write verb RBAC grants it on Secrets, claims and CodeInterpreters goes through it
    admitted = {"create": "CREATE", "patch": "UPDATE", "update": "UPDATE", "delete": "DELETE"}
    for rule in (core, templates):
        written = {
            g[3] for g in EXPECTED["agentcube-e2b-lifecycle"]
            if (g[1] in rule["apiGroups"]) and g[2] in rule["resources"]
        } - {"get", "list", "watch"}  # fmt: skip
        assert written
        assert {admitted[verb] for verb in written} <= set(rule["operations"])
    (condition,) = spec["matchConditions"]
    assert f"system:serviceaccount:{NAMESPACE}:agentcube-e2b-lifecycle" in condition["expression"]
    new, old = (validation["expression"] for validation in spec["validations"])
    label = "object.metadata.labels['app.kubernetes.io/managed-by'] == 'agentcube-e2b'"
    assert new.startswith("request.operation == 'DELETE' ||") and label in new
    assert old.startswith("request.operation == 'CREATE' ||")
    assert "oldObject.metadata.labels['app.kubernetes.io/managed-by'] == 'agentcube-e2b'" in old


def test_every_secret_the_gateway_makes_carries_the_admitted_label() -> None:
    from extproc.k8s import identity, lifecycle_tls, object_proof
    from extproc.lifecycle import manifests

    for labels in (identity.SEED_LABELS, identity.IDENTITY_LABELS, lifecycle_tls.LABELS,
                   object_proof.KEY_LABELS):  # fmt: skip
        assert labels.get("app.kubernetes.io/managed-by") == "agentcube-e2b"
    per_sandbox = manifests.secret_object(
        name="e2b-abc", namespace="team-a", token="t", env_vars={},
        object_labels=manifests.labels("abc", "base"),
    )  # fmt: skip
    assert per_sandbox["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "agentcube-e2b"


def test_pods_run_as_their_own_accounts() -> None:
    for deployment in (o for o in render() if o["kind"] == "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == deployment["metadata"]["name"]
