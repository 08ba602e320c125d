"""Opt-in (AGENTCUBE_E2B_K3S=1 and a Docker engine; skipped with the reason otherwise): the
official Python `e2b` SDK through Envoy, the edge and the lifecycle service in Kubernetes mode
against a real k3s API server. What is real and what is stood in: conftest.py."""

from __future__ import annotations

import pytest
from e2b import Sandbox
from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi

from e2e_k8s.conftest import SANDBOX_API, TEMPLATE, TENANT, get_sandbox_cr
from k3s.conftest import K3sGateway, wait_gone

# Starting k3s (and pulling its image) takes far longer than the suite's 120 s default; the
# third-party Docker/testcontainers code may warn (deprecations, sockets) without failing this.
pytestmark = [
    pytest.mark.timeout(900),
    pytest.mark.filterwarnings("default::DeprecationWarning"),
    pytest.mark.filterwarnings("default::ResourceWarning"),
    pytest.mark.filterwarnings("default::pytest.PytestUnraisableExceptionWarning"),
]

WAIT_S = 60.0


def test_create_run_kill(gateway: K3sGateway, kube: ApiClient) -> None:
    sbx = Sandbox.create(TEMPLATE, timeout=300)
    name = f"e2b-{sbx.sandbox_id}"
    try:
        cr = get_sandbox_cr(kube, TENANT, name)
        assert cr is not None, "no Sandbox CR in the k3s API"
        labels = cr["metadata"]["labels"]
        assert labels["e2b.agentcube.io/sandbox-id"] == sbx.sandbox_id
        assert labels["e2b.agentcube.io/template"] == TEMPLATE
        assert labels["app.kubernetes.io/managed-by"] == "agentcube-e2b"
        assert cr["spec"]["lifecycle"]["shutdownTime"]
        pod = CoreV1Api(kube).read_namespaced_pod(name, TENANT)
        assert pod.status.pod_ip

        result = sbx.commands.run("echo hi")
        assert result.exit_code == 0
        assert result.stdout == "hi\n"
    finally:
        sbx.kill()
    sandboxes = CustomObjectsApi(kube)
    wait_gone(
        lambda: sandboxes.get_namespaced_custom_object(
            *SANDBOX_API[:2], TENANT, SANDBOX_API[2], name
        ),
        WAIT_S,
    )
    wait_gone(lambda: CoreV1Api(kube).read_namespaced_pod(name, TENANT), WAIT_S)
    assert not sbx.is_running()
