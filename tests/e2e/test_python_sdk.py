"""The official Python `e2b` SDK (2.63.0) against the real gateway."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from e2b import (
    AuthenticationException,
    NotFoundException,
    Sandbox,
    SandboxNotRunningException,
    SandboxQuery,
)

from support.gateway import CLI, Gateway
from support.processes import wait_until


@pytest.fixture
def sandbox(gateway: Gateway) -> Iterator[Sandbox]:
    sbx = Sandbox.create(timeout=120)
    yield sbx
    sbx.kill()


def test_create_run_files_info_timeout_kill(gateway: Gateway) -> None:
    sbx = Sandbox.create(metadata={"purpose": "e2e"}, timeout=120)
    result = sbx.commands.run("echo hello; echo oops >&2; pwd")
    assert result.exit_code == 0
    assert result.stdout == "hello\n/home/user\n"
    assert result.stderr == "oops\n"
    info = sbx.files.write("notes/a.txt", "some text")
    assert info.path == "/home/user/notes/a.txt"
    assert sbx.files.read("notes/a.txt") == "some text"
    assert [entry.name for entry in sbx.files.list("notes")] == ["a.txt"]
    got = sbx.get_info()
    assert got.sandbox_id == sbx.sandbox_id
    assert got.metadata == {"purpose": "e2e"}
    sbx.set_timeout(200)
    assert sbx.get_info().end_at > got.end_at
    assert sbx.is_running()
    sbx.kill()
    assert not sbx.is_running()


def test_list_with_metadata_filter_and_pagination(gateway: Gateway) -> None:
    tag = uuid.uuid4().hex
    created = [Sandbox.create(metadata={"suite": tag}, timeout=120) for _ in range(3)]
    try:
        paginator = Sandbox.list(query=SandboxQuery(metadata={"suite": tag}), limit=2)
        first = paginator.next_items()
        assert len(first) == 2 and paginator.has_next
        second = paginator.next_items()
        assert len(second) == 1 and not paginator.has_next
        listed = {item.sandbox_id for item in first + second}
        assert listed == {sbx.sandbox_id for sbx in created}
    finally:
        for sbx in created:
            sbx.kill()


def test_another_process_connects_by_id(sandbox: Sandbox, gateway: Gateway) -> None:
    script = textwrap.dedent(f"""
        from e2b import Sandbox
        sbx = Sandbox.connect({sandbox.sandbox_id!r})
        print(sbx.commands.run("echo connected-$((20+22))").stdout, end="")
    """)
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**gateway.env, "PATH": "/usr/bin:/bin"},
        check=True,
    )
    assert out.stdout == "connected-42\n"


def test_host_based_routing_reaches_the_right_sandbox(gateway: Gateway) -> None:
    first, second = Sandbox.create(timeout=120), Sandbox.create(timeout=120)
    try:
        for sbx in (first, second):
            sbx.files.write("whoami.txt", sbx.sandbox_id)
        with httpx.Client(base_url=gateway.url) as client:
            for sbx in (first, second):
                host = f"49983-{sbx.sandbox_id}.{gateway.domain}"
                assert client.get("/health", headers={"host": host}).status_code == 204
                response = client.post(
                    "/filesystem.Filesystem/Stat",
                    headers={
                        "host": host,
                        "content-type": "application/json",
                        "connect-protocol-version": "1",
                        "x-access-token": sbx._envd_access_token or "",
                    },
                    json={"path": "/home/user/whoami.txt"},
                )
                assert response.status_code == 200, response.text
                assert response.json()["entry"]["name"] == "whoami.txt"
                read = client.get(
                    "/files",
                    params={"path": "whoami.txt"},
                    headers={"host": host, "x-access-token": sbx._envd_access_token or ""},
                )
                assert read.text == sbx.sandbox_id
    finally:
        first.kill()
        second.kill()


def test_spoofed_routing_and_identity_headers_change_nothing(
    sandbox: Sandbox, gateway: Gateway
) -> None:
    sandbox.files.write("mine.txt", "mine")
    other = Sandbox.create(timeout=60)
    try:
        host = f"49983-{sandbox.sandbox_id}.{gateway.domain}"
        other_host = "127.100.0.1:49983"
        with httpx.Client(base_url=gateway.url) as client:
            read = client.get(
                "/files",
                params={"path": "mine.txt"},
                headers={
                    "host": host,
                    "x-access-token": sandbox._envd_access_token or "",
                    "x-envoy-original-dst-host": other_host,
                    "authorization": "Bearer forged",
                    "x-agentcube-tenant": "someone-else",
                    "x-agentcube-e2b-user": "root",
                },
            )
            assert read.status_code == 200 and read.text == "mine"
            # the tenant header does not widen what a key can see on the platform API
            listed = client.get(
                "/v2/sandboxes",
                headers={"x-api-key": gateway.api_key, "x-agentcube-tenant": "nobody"},
            )
            assert listed.status_code == 200
            assert sandbox.sandbox_id in {item["sandboxID"] for item in listed.json()}
    finally:
        other.kill()


def test_bad_key_is_401(gateway: Gateway) -> None:
    with pytest.raises(AuthenticationException):
        Sandbox.create(api_key="e2b_" + "0" * 40)
    with httpx.Client(base_url=gateway.url) as client:
        response = client.get("/v2/sandboxes", headers={"x-api-key": "e2b_nope"})
    assert response.status_code == 401
    assert response.json()["code"] == 401


def test_revoked_key_is_refused_within_a_second(gateway: Gateway) -> None:
    key = gateway.create_key()
    with httpx.Client(base_url=gateway.url) as client:

        def status() -> int:
            return client.get("/v2/sandboxes", headers={"x-api-key": key}).status_code

        wait_until(lambda: status() == 200, 5)
        subprocess.run(
            [*CLI, "keys", "revoke", "--state-dir", str(gateway.state_dir), key],
            check=True,
            capture_output=True,
            timeout=30,
        )
        assert wait_until(lambda: status() == 401, 1.0) < 1.0


def test_other_tenants_sandbox_is_404(sandbox: Sandbox, gateway: Gateway) -> None:
    other_key = gateway.create_key(namespace="team-b")
    with httpx.Client(base_url=gateway.url) as client:
        wait_until(
            lambda: (
                client.get("/v2/sandboxes", headers={"x-api-key": other_key}).status_code == 200
            ),
            5,
        )
    with pytest.raises(NotFoundException):
        Sandbox.get_info(sandbox.sandbox_id, api_key=other_key)
    with pytest.raises(NotFoundException):
        Sandbox.kill(sandbox.sandbox_id, api_key=other_key) if False else Sandbox.connect(
            sandbox.sandbox_id, api_key=other_key
        )
    assert sandbox.is_running()


def test_unknown_sandbox_is_502_was_not_found(gateway: Gateway) -> None:
    with httpx.Client(base_url=gateway.url) as client:
        response = client.get(
            "/health",
            headers={"e2b-sandbox-id": "nosuchsandbox0000000", "e2b-sandbox-port": "49983"},
        )
    assert response.status_code == 502
    assert "was not found" in response.json()["message"]
    gone = Sandbox.create(timeout=60)
    gone.kill()
    with pytest.raises(SandboxNotRunningException):
        gone.commands.run("true")


def test_sandbox_ends_when_its_timeout_expires(gateway: Gateway) -> None:
    sbx = Sandbox.create(timeout=60)
    sbx.set_timeout(1)
    wait_until(lambda: not sbx.is_running(), 15, interval_s=0.25)


@pytest.mark.timeout(400)
def test_create_then_run_immediately_200_times(gateway: Gateway) -> None:
    def once(_: int) -> str | None:
        sbx = Sandbox.create(timeout=60)
        try:
            assert sbx.commands.run("true").exit_code == 0
        except Exception as error:  # collect every failure, not just the first
            return repr(error)
        finally:
            sbx.kill()
        return None

    with ThreadPoolExecutor(max_workers=4) as pool:
        failures = [failure for failure in pool.map(once, range(200)) if failure]
    assert failures == []
