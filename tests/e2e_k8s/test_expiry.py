"""Expiry as agent-sandbox does it: `set_timeout` moves the Sandbox's inlined
`spec.shutdownTime` (policy Delete), so the controller deletes the sandbox at its time even
while the lifecycle service is stopped."""

from __future__ import annotations

import os
import signal
from datetime import datetime

from e2b import Sandbox
from kubernetes.client import ApiClient

from e2e_k8s.conftest import TEMPLATE, TENANT, Gateway, wait_until
from e2e_k8s.objects_api import SANDBOXES, get_object

WAIT_S = 20.0


def _time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_set_timeout_moves_shutdown_time(gateway: Gateway, kube: ApiClient) -> None:
    sbx = Sandbox.create(TEMPLATE, timeout=120)
    try:
        name = f"e2b-{sbx.sandbox_id}"
        for timeout in (300, 60):  # longer, then shorter
            sbx.set_timeout(timeout)
            end_at = Sandbox.get_info(sbx.sandbox_id).end_at.timestamp()
            spec = (get_object(kube, SANDBOXES, TENANT, name) or {})["spec"]
            assert "lifecycle" not in spec  # the field agent-sandbox does not have
            assert abs(_time(spec["shutdownTime"]) - end_at) < 1.0
            assert spec["shutdownPolicy"] == "Delete"  # Retain would keep the object
    finally:
        sbx.kill()


def test_the_controller_expires_a_sandbox_while_the_lifecycle_is_stopped(
    gateway: Gateway, kube: ApiClient
) -> None:
    sbx = Sandbox.create(TEMPLATE, timeout=3)
    name = f"e2b-{sbx.sandbox_id}"
    lifecycle = gateway.pids["lifecycle"]
    os.killpg(lifecycle, signal.SIGSTOP)  # its own reaper cannot act
    try:
        wait_until(lambda: get_object(kube, SANDBOXES, TENANT, name) is None, WAIT_S)
    finally:
        os.killpg(lifecycle, signal.SIGCONT)
    # Back, the lifecycle reports it ended; the SDK sees it gone.
    wait_until(lambda: not sbx.is_running(), WAIT_S)
