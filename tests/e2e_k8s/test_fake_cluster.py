"""The stand-in for agent-sandbox's controller and the kubelet, through the official client
and the kubeconfig the gateway uses: a Sandbox gets a Ready Pod whose IP is a live picod
configured from the pod template; deleting the Sandbox stops picod and deletes the Pod."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path
from typing import Any

import httpx
from kubernetes import watch
from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi

from e2e_k8s.conftest import SANDBOX_API, TENANT, Cluster, get_sandbox_cr, wait_until
from e2e_k8s.kubelet import PICOD, picod_argv, picod_refuses

WAIT_S = 15.0


def _sandbox(name: str, env: list[dict[str, Any]], args: list[str]) -> dict[str, Any]:
    labels = {"e2b.agentcube.io/sandbox-id": name, "app.kubernetes.io/managed-by": "test"}
    return {
        "apiVersion": "/".join(SANDBOX_API[:2]),
        "kind": "Sandbox",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "podTemplate": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "picod", "image": "x", "env": env, "args": args}]},
            }
        },
    }


def _ready_pod_ip(kube: ApiClient, name: str) -> str:
    """The pod's IP once a watch event shows it Ready (the way the edge learns it)."""
    stream = watch.Watch()
    for event in stream.stream(
        CoreV1Api(kube).list_namespaced_pod,
        TENANT,
        label_selector=f"e2b.agentcube.io/sandbox-id={name}",
        _request_timeout=WAIT_S,
    ):
        pod = event["object"]
        conditions = {c.type: c.status for c in pod.status.conditions or []}
        if conditions.get("Ready") == "True" and pod.status.pod_ip:
            stream.stop()
            ip: str = pod.status.pod_ip
            return ip
    raise AssertionError(f"pod of {name} never became Ready")


def test_sandbox_gets_a_ready_pod_serving_picod_and_delete_stops_it(
    cluster: Cluster, kube: ApiClient
) -> None:
    name = f"e2b-{uuid.uuid4().hex[:12]}"
    secret: dict[str, Any] = {"apiVersion": "v1", "kind": "Secret"}
    secret["metadata"] = {"name": f"{name}-token"}
    secret["data"] = {"token": base64.b64encode(b"sesame").decode()}
    CoreV1Api(kube).create_namespaced_secret(TENANT, secret)
    token_ref = {"secretKeyRef": {"name": f"{name}-token", "key": "token"}}
    env: list[dict[str, Any]] = [
        {"name": "AGENTCUBE_E2B_PICOD_ACCESS_TOKEN", "valueFrom": token_ref},
        {"name": "AGENTCUBE_E2B_PICOD_SANDBOX_ID", "value": name},
    ]
    custom = CustomObjectsApi(kube)
    custom.create_namespaced_custom_object(
        *SANDBOX_API[:2], TENANT, SANDBOX_API[2], _sandbox(name, env, ["--env", "GREETING=hi"])
    )

    ip = _ready_pod_ip(kube, name)
    assert ip.startswith("127.101.")
    with httpx.Client(base_url=f"http://{ip}:49983", timeout=5) as picod:
        assert picod.get("/health").status_code == 204
        assert picod.get("/envs").status_code == 401
        envs = picod.get("/envs", headers={"X-Access-Token": "sesame"})
        assert envs.status_code == 200
        assert envs.json()["GREETING"] == "hi"
    status = (get_sandbox_cr(kube, TENANT, name) or {}).get("status", {})
    assert {"type": "Ready", "status": "True"}.items() <= status["conditions"][0].items()

    custom.delete_namespaced_custom_object(*SANDBOX_API[:2], TENANT, SANDBOX_API[2], name)
    wait_until(lambda: picod_refuses(ip), WAIT_S, interval_s=0.02)
    selector = f"e2b.agentcube.io/sandbox-id={name}"
    wait_until(
        lambda: not CoreV1Api(kube).list_namespaced_pod(TENANT, label_selector=selector).items,
        WAIT_S,
        interval_s=0.02,
    )
    CoreV1Api(kube).delete_namespaced_secret(f"{name}-token", TENANT)


def test_picod_flags_come_from_the_container_with_address_and_home_of_the_pod() -> None:
    home = Path("/tmp/pod/home")
    container = {
        "command": ["/usr/local/bin/agentcube-e2b", "picod"],
        "args": ["--listen", "0.0.0.0:49983", "--home=/home/user", "--sandbox-id", "abc"],
    }
    assert picod_argv(container, "127.101.0.9", home) == [
        *PICOD,
        "--sandbox-id",
        "abc",
        "--listen",
        "127.101.0.9:49983",
        "--home",
        str(home),
    ]
    # an image entrypoint: the args are picod's flags
    assert picod_argv({"args": ["--no-auth"]}, "127.101.0.9", home)[len(PICOD)] == "--no-auth"
