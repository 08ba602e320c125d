"""Pause, resume and auto-resume in Kubernetes mode through the SDK, and a signed download URL
fetched by a bare HTTP client. Pause scales the pod to 0 (`replicas: 0`; v1beta1
`operatingMode: Suspended`): nothing in memory survives, and without a volume claim template
the filesystem does not either (docs/kubernetes.md says so)."""

from __future__ import annotations

import httpx
import pytest
from e2b import Sandbox
from kubernetes.client import ApiClient

from e2e_k8s.conftest import DOMAIN, POOLED, TEMPLATE, TENANT, Gateway, pod_ip, wait_until
from e2e_k8s.objects_api import SANDBOXES, bound_sandbox, get_object

WAIT_S = 20.0


@pytest.mark.parametrize("template", [TEMPLATE, POOLED])
def test_pause_then_connect_resumes(gateway: Gateway, kube: ApiClient, template: str) -> None:
    sbx = Sandbox.create(template, timeout=120)
    try:
        name = f"e2b-{sbx.sandbox_id}" if template == TEMPLATE else bound_sandbox(
            kube, TENANT, sbx.sandbox_id)  # fmt: skip
        assert sbx.commands.run("echo before").stdout == "before\n"
        sbx.pause()
        assert Sandbox.get_info(sbx.sandbox_id).state.value == "paused"
        cr = get_object(kube, SANDBOXES, TENANT, name)
        assert cr is not None and cr["spec"]["replicas"] == 0  # v1alpha1's view
        assert cr["metadata"]["annotations"]["e2b.agentcube.io/state"] == "paused"
        wait_until(lambda: pod_ip(kube, TENANT, name) is None, WAIT_S)
        assert not sbx.is_running()  # answered at once, never routed to a stopped pod
        resumed = Sandbox.connect(sbx.sandbox_id)
        assert Sandbox.get_info(sbx.sandbox_id).state.value == "running"
        # A warm pod is a new pod from the pool's template: bound again, token and all.
        assert resumed.commands.run("echo after").stdout == "after\n"
    finally:
        sbx.kill()


def test_traffic_resumes_an_auto_resume_sandbox(gateway: Gateway, kube: ApiClient) -> None:
    sbx = Sandbox.create(
        TEMPLATE, timeout=120, lifecycle={"on_timeout": "pause", "auto_resume": True}
    )
    try:
        sbx.pause()
        assert Sandbox.get_info(sbx.sandbox_id).state.value == "paused"
        # No connect: the request itself wakes it (the edge asks the lifecycle to resume).
        result = sbx.commands.run("echo awake")
        assert result.stdout == "awake\n"
        assert Sandbox.get_info(sbx.sandbox_id).state.value == "running"
    finally:
        sbx.kill()


def test_a_paused_sandbox_without_auto_resume_is_not_found(gateway: Gateway) -> None:
    sbx = Sandbox.create(TEMPLATE, timeout=120)
    try:
        sbx.pause()
        health = httpx.get(
            f"{gateway.url}/health", headers={"Host": f"49983-{sbx.sandbox_id}.{DOMAIN}"}
        )
        assert health.status_code == 502
        assert health.json()["sandboxId"] == sbx.sandbox_id
    finally:
        sbx.kill()


def test_a_signed_download_url_works_from_a_bare_client(gateway: Gateway) -> None:
    sbx = Sandbox.create(TEMPLATE, timeout=120, secure=True)
    try:
        sbx.files.write("report.txt", "signed and delivered")
        url = httpx.URL(sbx.download_url("report.txt", use_signature_expiration=60))
        assert "signature=" in str(url)
        # Host-routed, as a client resolving the sandbox's own host would send it: the URL's
        # query and nothing else (no token, no API key).
        host = {"Host": f"49983-{sbx.sandbox_id}.{DOMAIN}"}
        got = httpx.get(f"{gateway.url}/files", params=url.params, headers=host)
        assert (got.status_code, got.text) == (200, "signed and delivered")
        forged = dict(url.params, path="/etc/hostname")
        refused = httpx.get(f"{gateway.url}/files", params=forged, headers=host)
        assert refused.status_code == 401
        unsigned = httpx.get(f"{gateway.url}/files", params={"path": "report.txt"}, headers=host)
        assert unsigned.status_code == 401
    finally:
        sbx.kill()
