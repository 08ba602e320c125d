"""RBAC grants the edge and lifecycle service exactly what issue 5 lists, nothing more.

Every rule reachable from a service account (through any RoleBinding or ClusterRoleBinding
in the base) is flattened to (scope, apiGroup, resource, verb, resourceName) and compared
with the expected set. "*" as a resource name means the rule names no object.
"""

from __future__ import annotations

from typing import Any

import pytest

from k8s.render import render

Grant = tuple[str, str, str, str, str]
NAMESPACE = "agentcube-system"
CLUSTER = "cluster"
READ = ("get", "list", "watch")
WRITE = ("create", "patch", "delete", "get", "list", "watch")

EXPECTED: dict[str, set[Grant]] = {
    "agentcube-e2b-edge": {
        *((NAMESPACE, "", "secrets", verb, "e2b-api-keys") for verb in READ),
        *((NAMESPACE, "", "configmaps", verb, "e2b-api-key-config") for verb in READ),
        *((CLUSTER, "agents.x-k8s.io", "sandboxes", verb, "*") for verb in READ),
        *((CLUSTER, "", "pods", verb, "*") for verb in READ),
    },
    "agentcube-e2b-lifecycle": {
        *((CLUSTER, "agents.x-k8s.io", "sandboxes", verb, "*") for verb in WRITE),
        *((CLUSTER, "extensions.agents.x-k8s.io", "sandboxclaims", verb, "*") for verb in WRITE),
        *((CLUSTER, "runtime.agentcube.volcano.sh", "codeinterpreters", v, "*") for v in READ),
        *((CLUSTER, "", "pods", verb, "*") for verb in (*READ, "patch")),
        (NAMESPACE, "", "secrets", "get", "picod-router-identity"),
        (NAMESPACE, "", "secrets", "get", "e2b-envd-token-seed"),
        # `create` cannot be limited by name in RBAC; the ValidatingAdmissionPolicy does it
        (NAMESPACE, "", "secrets", "create", "*"),
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
    assert grants_by_account(render()) == EXPECTED


@pytest.mark.parametrize("account", sorted(EXPECTED))
def test_no_wildcards(account: str) -> None:
    for grant in grants_by_account(render())[account]:
        assert "*" not in grant[1:4], grant


def test_edge_secret_and_configmap_reads_are_by_name_only() -> None:
    """The informers must then list/watch with fieldSelector=metadata.name=<name>."""
    edge = grants_by_account(render())["agentcube-e2b-edge"]
    named = {g for g in edge if g[2] in {"secrets", "configmaps"}}
    assert named and all(g[4] != "*" for g in named)


def test_admission_policy_limits_lifecycle_secret_creates_to_the_identity() -> None:
    objects = render()
    (policy,) = [o for o in objects if o["kind"] == "ValidatingAdmissionPolicy"]
    (binding,) = [o for o in objects if o["kind"] == "ValidatingAdmissionPolicyBinding"]
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    spec = policy["spec"]
    assert spec["failurePolicy"] == "Fail"
    (rule,) = spec["matchConstraints"]["resourceRules"]
    assert (rule["resources"], rule["operations"]) == (["secrets"], ["CREATE"])
    (condition,) = spec["matchConditions"]
    assert f"system:serviceaccount:{NAMESPACE}:agentcube-e2b-lifecycle" in condition["expression"]
    (validation,) = spec["validations"]
    assert validation["expression"] == (
        "object.metadata.name in ['picod-router-identity', 'e2b-envd-token-seed']"
    )


def test_pods_run_as_their_own_accounts() -> None:
    for deployment in (o for o in render() if o["kind"] == "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == deployment["metadata"]["name"]
