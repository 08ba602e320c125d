"""The NetworkPolicies, evaluated: who can open a TCP connection to whom.

A tiny evaluator of the NetworkPolicy semantics the base uses (pod and namespace label
selectors with matchLabels/matchExpressions, ports, ingress and egress): a connection is
allowed when the source's egress and the destination's ingress both allow it; a pod that
no policy of a direction selects is open in that direction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from manifests.render import render_install

NAMESPACE = "agentcube-system"


@dataclass(frozen=True)
class Pod:
    namespace: str
    labels: dict[str, str] = field(default_factory=dict)


EDGE = Pod(NAMESPACE, {"app.kubernetes.io/name": "agentcube-e2b-edge"})
LIFECYCLE = Pod(NAMESPACE, {"app.kubernetes.io/name": "agentcube-e2b-lifecycle"})
# AgentCube's own pods, in its namespace
ROUTER = Pod("agentcube", {"app": "agentcube-router"})
WORKLOAD_MANAGER = Pod("agentcube", {"app": "workloadmanager"})
SANDBOX = Pod("team-a", {"e2b.agentcube.io/sandbox-id": "abc123"})
NATIVE_SANDBOX = Pod("team-a", {"managed-by": "agentcube-workload-manager"})
OTHER = Pod("default", {"app": "something"})
NAMESPACE_LABELS = {
    ns: {"kubernetes.io/metadata.name": ns} for ns in (NAMESPACE, "team-a", "agentcube")
}


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        present, value = expression["key"] in labels, labels.get(expression["key"])
        operator, values = expression["operator"], expression.get("values", [])
        if operator == "In" and value not in values:
            return False
        if operator == "NotIn" and present and value in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def _peer_matches(peer: dict[str, Any], policy_namespace: str, pod: Pod) -> bool:
    assert "ipBlock" not in peer
    if "namespaceSelector" in peer:
        ns_labels = NAMESPACE_LABELS.get(pod.namespace, {})
        if not _matches(peer["namespaceSelector"], ns_labels):
            return False
    elif pod.namespace != policy_namespace:
        return False
    return _matches(peer.get("podSelector", {}), pod.labels)


def _port_matches(ports: list[dict[str, Any]] | None, port: int) -> bool:
    return ports is None or any(p["port"] == port and p["protocol"] == "TCP" for p in ports)


def _allowed(policies: list[dict[str, Any]], subject: Pod, peer: Pod, port: int, way: str) -> bool:
    direction, peers_key = ("Ingress", "from") if way == "ingress" else ("Egress", "to")
    selecting = [
        p
        for p in policies
        if p["metadata"]["namespace"] == subject.namespace
        and direction in p["spec"]["policyTypes"]
        and _matches(p["spec"]["podSelector"], subject.labels)
    ]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get(way, []):
            peers = rule.get(peers_key)
            peer_ok = peers is None or any(
                _peer_matches(p, policy["metadata"]["namespace"], peer) for p in peers
            )
            if peer_ok and _port_matches(rule.get("ports"), port):
                return True
    return False


@pytest.fixture(scope="module")
def policies() -> list[dict[str, Any]]:
    return [o for o in render_install() if o["kind"] == "NetworkPolicy"]


def can_connect(policies: list[dict[str, Any]], source: Pod, target: Pod, port: int) -> bool:
    return _allowed(policies, source, target, port, "egress") and _allowed(
        policies, target, source, port, "ingress"
    )


@pytest.mark.parametrize(
    ("source", "target", "port", "expected"),
    [
        # the public listener is open; nothing else on the edge pod is
        (OTHER, EDGE, 8081, True),
        (OTHER, EDGE, 9001, False),
        (OTHER, EDGE, 9091, False),
        (OTHER, EDGE, 9901, False),
        # only the edge reaches the lifecycle service
        (EDGE, LIFECYCLE, 9002, True),
        (OTHER, LIFECYCLE, 9002, False),
        (SANDBOX, LIFECYCLE, 9002, False),
        (ROUTER, LIFECYCLE, 9002, False),
        # its plaintext health port is for kubelet (from the node), no pod
        (EDGE, LIFECYCLE, 9003, False),
        (SANDBOX, LIFECYCLE, 9003, False),
        (OTHER, LIFECYCLE, 9003, False),
        # the edge pod (and so the public listener behind it) never reaches AgentCube's
        # native APIs nor AgentCube's own sandboxes
        (EDGE, ROUTER, 8080, False),
        (EDGE, WORKLOAD_MANAGER, 8080, False),
        (EDGE, NATIVE_SANDBOX, 8080, False),
        # ... which everyone else still reaches
        (OTHER, ROUTER, 8080, True),
        (SANDBOX, WORKLOAD_MANAGER, 8080, True),
        # the edge reaches every port of its own sandboxes; lifecycle only picod's and the
        # interpreter's
        (EDGE, SANDBOX, 49983, True),
        (EDGE, SANDBOX, 3000, True),
        (LIFECYCLE, SANDBOX, 49983, True),
        (LIFECYCLE, SANDBOX, 49999, True),
        (LIFECYCLE, SANDBOX, 3000, False),
        (LIFECYCLE, ROUTER, 8080, False),
    ],
)
def test_reachability(
    policies: list[dict[str, Any]], source: Pod, target: Pod, port: int, expected: bool
) -> None:
    assert can_connect(policies, source, target, port) is expected


def test_agentcubes_native_apis_refuse_the_edge_on_their_own(
    policies: list[dict[str, Any]],
) -> None:
    """For CNIs that enforce only ingress well: the policy in AgentCube's namespace alone,
    without the edge's egress policy, keeps the edge out and everyone else in."""
    native = [p for p in policies if p["metadata"]["namespace"] == "agentcube"]
    assert native
    for target in (ROUTER, WORKLOAD_MANAGER):
        assert _allowed(native, target, EDGE, 8080, "ingress") is False
        assert _allowed(native, target, OTHER, 8080, "ingress") is True
        assert _allowed(native, target, LIFECYCLE, 8080, "ingress") is True
