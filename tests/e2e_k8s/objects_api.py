"""Reading the fake cluster's objects as a test would with kubectl: raw JSON through the
official client, in agent-sandbox's v1alpha1 (served by every release; 0.5.x converts)."""

from __future__ import annotations

import json
from typing import Any

from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

SANDBOXES = ("agents.x-k8s.io", "v1alpha1", "sandboxes")
CLAIMS = ("extensions.agents.x-k8s.io", "v1alpha1", "sandboxclaims")


def get_object(
    kube: ApiClient, api: tuple[str, str, str], namespace: str, name: str
) -> dict[str, Any] | None:
    group, version, plural = api
    try:
        obj = CustomObjectsApi(kube).get_namespaced_custom_object(
            group, version, namespace, plural, name
        )
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    assert isinstance(obj, dict)
    return obj


def all_objects(kube: ApiClient, api: tuple[str, str, str]) -> list[dict[str, Any]]:
    group, version, plural = api
    listed = CustomObjectsApi(kube).list_cluster_custom_object(group, version, plural)
    return list(listed["items"])


def all_pods(kube: ApiClient) -> list[dict[str, Any]]:
    """Every pod as the API serves it (raw JSON: what anyone allowed to get pods reads)."""
    response = CoreV1Api(kube).list_pod_for_all_namespaces(_preload_content=False)
    return list(json.loads(response.data)["items"])


def bound_sandbox(kube: ApiClient, namespace: str, sandbox_id: str) -> str:
    """The agent-sandbox Sandbox the claim of `sandbox_id` is bound to ("" when none)."""
    claim = get_object(kube, CLAIMS, namespace, f"e2b-{sandbox_id}") or {}
    return str(((claim.get("status") or {}).get("sandbox") or {}).get("name") or "")
