"""What a tenant who may create Sandboxes and Pods in its own namespace can do to another
tenant's sandbox by copying its id label (and every annotation, proof included) onto objects
of its own: nothing. And what anyone who may read Sandboxes, claims or Pods learns: no token
and no env value."""

from __future__ import annotations

import copy
import json
from typing import Any

import httpx
from e2b import Sandbox
from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi

from e2e_k8s.conftest import OTHER_TENANT, POOLED, TEMPLATE, TENANT, Gateway, wait_until
from e2e_k8s.objects_api import CLAIMS, SANDBOXES, all_objects, all_pods, get_object

WAIT_S = 15.0


def _detail(gateway: Gateway, key: str, sandbox_id: str) -> httpx.Response:
    return httpx.get(f"{gateway.url}/sandboxes/{sandbox_id}", headers={"X-API-Key": key})


def _copy_into(victim: dict[str, Any], namespace: str) -> dict[str, Any]:
    """The victim's Sandbox as the attacker would re-create it: same name, labels and
    annotations (its proof too), same pod template, in the attacker's namespace."""
    metadata = victim["metadata"]
    return {
        "apiVersion": victim["apiVersion"],
        "kind": "Sandbox",
        "metadata": {
            "name": metadata["name"],
            "namespace": namespace,
            "labels": dict(metadata["labels"]),
            "annotations": dict(metadata["annotations"]),
        },
        "spec": {
            "replicas": 1,
            "podTemplate": copy.deepcopy(victim["spec"]["podTemplate"]),
        },
    }


def test_a_copied_id_label_in_another_namespace_changes_nothing(
    gateway: Gateway, kube: ApiClient
) -> None:
    sbx = Sandbox.create(TEMPLATE, timeout=120)
    try:
        sbx.files.write("marker.txt", "the victim's own pod")
        before = _detail(gateway, gateway.api_key, sbx.sandbox_id).json()
        victim = get_object(kube, SANDBOXES, TENANT, f"e2b-{sbx.sandbox_id}")
        assert victim is not None
        attacker = _copy_into(victim, OTHER_TENANT)
        # The Secret its pod reads, with a token of the attacker's choosing, so the pod runs.
        CoreV1Api(kube).create_namespaced_secret(OTHER_TENANT, {
            "metadata": {"name": f"e2b-{sbx.sandbox_id}"},
            "stringData": {"access-token": "attacker", "env-vars.json": "{}"},
        })  # fmt: skip
        group, version, plural = SANDBOXES
        CustomObjectsApi(kube).create_namespaced_custom_object(
            group, version, OTHER_TENANT, plural, attacker
        )

        # The fake kubelet runs the attacker's pod too: wait until it is Ready, so both
        # informers have seen everything the attacker made.
        def attacker_pod_ready() -> bool:
            return any(
                pod["metadata"]["namespace"] == OTHER_TENANT
                and any(c.get("type") == "Ready" and c.get("status") == "True"
                        for c in (pod.get("status") or {}).get("conditions") or ())
                for pod in all_pods(kube)
            )  # fmt: skip

        wait_until(attacker_pod_ready, WAIT_S)
        # The victim: the same answer, token included; routed to its own pod.
        after = _detail(gateway, gateway.api_key, sbx.sandbox_id).json()
        assert after["envdAccessToken"] == before["envdAccessToken"]
        assert after == before
        assert sbx.files.read("marker.txt") == "the victim's own pod"
        assert sbx.commands.run("cat marker.txt").stdout == "the victim's own pod"
        ours = [s.sandbox_id for s in Sandbox.list().next_items()]
        assert ours.count(sbx.sandbox_id) == 1
        # The attacker: nothing under that id.
        stolen = _detail(gateway, gateway.other_tenant_key, sbx.sandbox_id)
        assert stolen.status_code == 404
        assert before["envdAccessToken"] not in stolen.text
        theirs = Sandbox.list(api_key=gateway.other_tenant_key).next_items()
        assert sbx.sandbox_id not in {s.sandbox_id for s in theirs}
    finally:
        sbx.kill()
        name = f"e2b-{sbx.sandbox_id}"
        CustomObjectsApi(kube).delete_namespaced_custom_object(
            *SANDBOXES[:2], OTHER_TENANT, SANDBOXES[2], name
        )
        CoreV1Api(kube).delete_namespaced_secret(name, OTHER_TENANT)


def test_no_token_or_env_value_in_any_sandbox_claim_or_pod(
    gateway: Gateway, kube: ApiClient
) -> None:
    secret = "value-only-the-sandbox-may-see-7c1e"
    cold = Sandbox.create(TEMPLATE, timeout=120, envs={"SECRET_VALUE": secret})
    warm = Sandbox.create(POOLED, timeout=120, envs={"SECRET_VALUE": secret})
    try:
        tokens = []
        for sbx in (cold, warm):
            assert sbx.commands.run("echo $SECRET_VALUE").stdout == secret + "\n"
            token = _detail(gateway, gateway.api_key, sbx.sandbox_id).json()["envdAccessToken"]
            assert token
            tokens.append(token)
        readable = json.dumps(
            [all_objects(kube, SANDBOXES), all_objects(kube, CLAIMS), all_pods(kube)]
        )
        assert cold.sandbox_id in readable and warm.sandbox_id in readable  # they are there
        for value in (secret, *tokens):
            assert value not in readable
    finally:
        cold.kill()
        warm.kill()
