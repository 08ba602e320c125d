"""The official Python `e2b` SDK through Envoy, the edge and the lifecycle service in
Kubernetes mode: templates are CodeInterpreters, sandboxes are agent-sandbox Sandbox CRs
whose pods are local picods (conftest.py, kubelet.py)."""

from __future__ import annotations

import time

import httpx
import pytest
from e2b import NotFoundException, Sandbox
from kubernetes.client import ApiClient

from e2e_k8s.conftest import (
    TEMPLATE,
    TENANT,
    Gateway,
    get_sandbox_cr,
    pod_ip,
    wait_until,
)
from e2e_k8s.kubelet import picod_refuses

WAIT_S = 10.0
REVOCATION_BOUND_S = 1.0


def _cr_name(sandbox_id: str) -> str:
    return f"e2b-{sandbox_id}"


def test_create_run_files_kill(gateway: Gateway, kube: ApiClient) -> None:
    sbx = Sandbox.create(TEMPLATE, timeout=120)
    try:
        name = _cr_name(sbx.sandbox_id)
        cr = get_sandbox_cr(kube, TENANT, name)
        assert cr is not None
        assert cr["metadata"]["labels"]["e2b.agentcube.io/sandbox-id"] == sbx.sandbox_id
        assert cr["metadata"]["labels"]["e2b.agentcube.io/template"] == TEMPLATE
        ip = pod_ip(kube, TENANT, name)
        assert ip is not None
        assert ip.startswith("127.101.")

        result = sbx.commands.run("echo hi")
        assert result.exit_code == 0
        assert result.stdout == "hi\n"
        sbx.files.write("notes/a.txt", "some text")
        assert sbx.files.read("notes/a.txt") == "some text"
    finally:
        sbx.kill()
    wait_until(lambda: get_sandbox_cr(kube, TENANT, name) is None, WAIT_S, interval_s=0.02)
    wait_until(lambda: picod_refuses(ip), WAIT_S, interval_s=0.02)
    assert not sbx.is_running()


def test_another_tenants_sandbox_is_not_found(gateway: Gateway) -> None:
    sbx = Sandbox.create(TEMPLATE, timeout=120)
    try:
        with pytest.raises(NotFoundException):
            Sandbox.get_info(sbx.sandbox_id, api_key=gateway.other_tenant_key)
        with pytest.raises(NotFoundException):
            Sandbox.connect(sbx.sandbox_id, api_key=gateway.other_tenant_key)
        theirs = Sandbox.list(api_key=gateway.other_tenant_key).next_items()
        assert sbx.sandbox_id not in {info.sandbox_id for info in theirs}
        assert Sandbox.get_info(sbx.sandbox_id).sandbox_id == sbx.sandbox_id
        ours = Sandbox.list().next_items()
        assert sbx.sandbox_id in {info.sandbox_id for info in ours}
    finally:
        sbx.kill()


def test_revoked_key_is_refused_within_one_second(gateway: Gateway) -> None:
    key = gateway.create_key(TENANT)
    with httpx.Client(base_url=gateway.url, headers={"X-API-Key": key}, timeout=5) as api:
        # the edge learns new keys from the same watch: wait for this one to be accepted
        wait_until(lambda: api.get("/sandboxes").status_code == 200, WAIT_S, interval_s=0.02)
        gateway.keys("revoke", key)
        revoked = time.monotonic()
        wait_until(lambda: api.get("/sandboxes").status_code == 401, WAIT_S, interval_s=0.01)
        took = time.monotonic() - revoked
        assert took <= REVOCATION_BOUND_S, f"refused {took:.3f} s after the Secret changed"
