"""Acceptance: a key over its namespace's concurrency quota gets 429 from `Sandbox.create`
(the SDK's RateLimitException); another namespace is unaffected. Quotas are set with
`agentcube-e2b keys quota` while `up` runs: the edge reloads the key files live."""

from __future__ import annotations

import subprocess
import time

import pytest
from e2b import RateLimitException, Sandbox

from support.gateway import CLI, Gateway


def _set_quota(gateway: Gateway, namespace: str, *flags: str) -> None:
    argv = [*CLI, "keys", "quota", "--state-dir", str(gateway.state_dir),
            "--namespace", namespace, *flags]  # fmt: skip
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


def test_concurrency_quota_is_a_429_for_that_namespace_only(gateway: Gateway) -> None:
    limited, other = gateway.create_key("quota-a"), gateway.create_key("quota-b")
    _set_quota(gateway, "quota-a", "--max-sandboxes", "1")
    time.sleep(0.5)  # the edge polls the key files every 250 ms
    first = Sandbox.create(api_key=limited)
    try:
        with pytest.raises(RateLimitException) as refused:
            Sandbox.create(api_key=limited)
        assert "maxSandboxes" in str(refused.value) and "quota-a" in str(refused.value)
        unaffected = Sandbox.create(api_key=other)
        try:
            assert unaffected.commands.run("echo ok").stdout == "ok\n"
        finally:
            unaffected.kill()
    finally:
        first.kill()
    again = Sandbox.create(api_key=limited)  # the slot is free once the first is gone
    again.kill()
