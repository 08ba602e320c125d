"""Filesystem-only pause through `up` with the official Python SDK: E2B's
`lifecycle={"on_timeout": {"action": "pause", "mode": "filesystem"}}` and
`pause(mode="filesystem")` keep the files and end the processes; `connect` starts the
sandbox afresh with the same id. A filesystem timeout pause with `auto_resume` is E2B's 400.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from e2b import InvalidArgumentException, Sandbox

from support.gateway import Gateway
from support.processes import wait_until

_FILESYSTEM_ON_TIMEOUT: Any = {"on_timeout": {"action": "pause", "mode": "filesystem"}}


def _api(gateway: Gateway) -> httpx.Client:
    return httpx.Client(base_url=gateway.url, headers={"X-API-Key": gateway.api_key}, timeout=30.0)


def _detail(gateway: Gateway, sandbox_id: str) -> dict[str, Any]:
    with _api(gateway) as api:
        response = api.get(f"/sandboxes/{sandbox_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _prepare(sbx: Sandbox) -> None:
    """A file written and a process running: what a filesystem pause keeps and ends."""
    sbx.files.write("kept.txt", "written before the pause")
    sbx.commands.run("sleep 1000", background=True)
    assert "sleep 1000" in sbx.commands.run("ps -eo args").stdout


def _check_resumed_fresh(gateway: Gateway, sandbox_id: str, token: str) -> None:
    """`connect` resumes it: same id and token, the file is there, the process is not."""
    resumed = Sandbox.connect(sandbox_id, timeout=120)
    try:
        assert resumed.sandbox_id == sandbox_id
        assert resumed.is_running()
        assert resumed.files.read("kept.txt") == "written before the pause"
        assert "sleep 1000" not in resumed.commands.run("ps -eo args").stdout
        detail = _detail(gateway, sandbox_id)
        assert detail["state"] == "running" and "pauseMode" not in detail
        assert detail["envdAccessToken"] == token
    finally:
        resumed.kill()


def test_timeout_pause_in_filesystem_mode(gateway: Gateway) -> None:
    sbx = Sandbox.create(timeout=120, lifecycle=_FILESYSTEM_ON_TIMEOUT)
    token = _detail(gateway, sbx.sandbox_id)["envdAccessToken"]
    _prepare(sbx)
    sbx.set_timeout(1)
    wait_until(lambda: _detail(gateway, sbx.sandbox_id)["state"] == "paused", 60, 0.2)
    detail = _detail(gateway, sbx.sandbox_id)
    assert detail["pauseMode"] == "filesystem"
    assert detail["lifecycle"] == {"autoResume": False, "onTimeout": "pause"}
    with _api(gateway) as api:
        listed = api.get("/v2/sandboxes", params={"state": "paused"}).json()
    assert [(s["sandboxID"], s.get("pauseMode")) for s in listed] == [
        (sbx.sandbox_id, "filesystem")
    ]
    _check_resumed_fresh(gateway, sbx.sandbox_id, token)


def test_explicit_pause_in_filesystem_mode(gateway: Gateway) -> None:
    sbx = Sandbox.create(timeout=120)
    token = _detail(gateway, sbx.sandbox_id)["envdAccessToken"]
    _prepare(sbx)
    assert sbx.pause(mode="filesystem") is True
    assert _detail(gateway, sbx.sandbox_id)["pauseMode"] == "filesystem"
    assert sbx.pause(mode="filesystem") is False  # already paused: E2B's 409
    _check_resumed_fresh(gateway, sbx.sandbox_id, token)


def test_explicit_pause_defaults_to_full(gateway: Gateway) -> None:
    sbx = Sandbox.create(timeout=120)
    try:
        _prepare(sbx)
        assert sbx.pause() is True
        assert _detail(gateway, sbx.sandbox_id)["pauseMode"] == "full"
        resumed = Sandbox.connect(sbx.sandbox_id, timeout=120)
        assert "sleep 1000" in resumed.commands.run("ps -eo args").stdout  # it kept running
        assert "pauseMode" not in _detail(gateway, sbx.sandbox_id)  # only while paused
    finally:
        sbx.kill()


def test_filesystem_mode_with_auto_resume_is_refused(gateway: Gateway) -> None:
    lifecycle: Any = {**_FILESYSTEM_ON_TIMEOUT, "auto_resume": True}
    with pytest.raises(InvalidArgumentException):  # the SDK refuses before sending
        Sandbox.create(timeout=120, lifecycle=lifecycle)
    # The gateway refuses it too, as E2B's API, for clients that do send it.
    body = {
        "templateID": "base", "timeout": 120, "autoPause": True, "autoPauseMemory": False,
        "autoResume": {"enabled": True},
    }  # fmt: skip
    with _api(gateway) as api:
        before = {s["sandboxID"] for s in api.get("/v2/sandboxes").json()}
        response = api.post("/sandboxes", json=body)
        assert response.status_code == 400, response.text
        error = response.json()
        assert error["code"] == 400 and "autoPauseMemory" in error["message"]
        assert {s["sandboxID"] for s in api.get("/v2/sandboxes").json()} == before
        wrong = api.post("/sandboxes", json={**body, "autoPauseMemory": "no"})
        assert wrong.status_code == 400, wrong.text
