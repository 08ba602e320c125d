"""The CodeInterpreter fields an E2B client notices: `sessionTimeout` (the default timeout),
`maxSessionDuration` (the cap) and `ports` (the ports E2B traffic may reach)."""

from __future__ import annotations

from datetime import datetime

import httpx
import pytest
from e2b import Sandbox, SandboxException

from e2e_k8s.conftest import DOMAIN, TEMPLATE, Gateway


def _time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_a_create_without_timeout_gets_the_session_timeout(gateway: Gateway) -> None:
    created = httpx.post(
        f"{gateway.url}/v2/sandboxes",
        headers={"X-API-Key": gateway.api_key},
        json={"templateID": TEMPLATE},
        timeout=60,
    )
    assert created.status_code == 201, created.text
    sandbox_id = created.json()["sandboxID"]
    try:
        detail = httpx.get(
            f"{gateway.url}/sandboxes/{sandbox_id}", headers={"X-API-Key": gateway.api_key}
        ).json()
        life = _time(detail["endAt"]) - _time(detail["startedAt"])
        assert abs(life - 15 * 60) <= 1  # the CodeInterpreter's sessionTimeout: 15m
    finally:
        Sandbox.kill(sandbox_id)


def test_no_timeout_beyond_the_max_session_duration(gateway: Gateway) -> None:
    with pytest.raises(SandboxException, match="400"):
        Sandbox.create(TEMPLATE, timeout=9 * 3600)  # maxSessionDuration: 8h


def test_only_the_templates_ports_are_reachable(gateway: Gateway) -> None:
    sbx = Sandbox.create(TEMPLATE, timeout=120)
    try:
        closed = httpx.get(
            f"{gateway.url}/", headers={"Host": f"8080-{sbx.sandbox_id}.{DOMAIN}"}, timeout=10
        )
        assert closed.status_code == 502
        assert closed.json() == {
            "sandboxId": sbx.sandbox_id,
            "message": "The sandbox is running but port is not open",
            "port": 8080,
            "code": 502,
        }
        assert sbx.commands.run("echo envd is open").exit_code == 0
    finally:
        sbx.kill()
