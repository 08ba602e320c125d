"""The sandbox env vars come from envd's GET /envs with the caller's credentials forwarded.

In Kubernetes mode picod requires the gateway's JWT as well as the access token, so the
interpreter forwards the `Authorization: Bearer` its `/execute` request arrived with (the
edge adds it on port 49999 too). First against a stub envd that records what it receives,
then end to end: a warm-pool picod bound by `/init`, and a real interpreter in front of it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from extproc.core.ids import new_sandbox_id
from extproc.interpreter.envs import SandboxEnvs

from .conftest import Server, launch

TOKEN = "envs-token-0123456789"
ENV = {"FROM_INIT": "bound"}


@dataclass
class StubEnvd:
    """Answers GET /envs with ENV only to requests carrying `required` headers."""

    required: dict[str, str]
    url: str = ""
    seen: list[dict[str, str]] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        headers = {}
        for line in head.decode("latin-1").split("\r\n")[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        self.seen.append(headers)
        if all(headers.get(k.lower()) == v for k, v in self.required.items()):
            body = json.dumps(ENV).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        else:
            body = b'{"code": 401, "message": "unauthorized access: missing bearer token"}'
            writer.write(b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n")
        writer.write(b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()


@pytest.fixture
async def stub() -> AsyncIterator[StubEnvd]:
    envd = StubEnvd({"Authorization": "Bearer the.gateway.jwt", "X-Access-Token": TOKEN})
    server = await asyncio.start_server(envd.handle, "127.0.0.1", 0)
    envd.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    async with server:
        yield envd


async def test_fetch_forwards_the_bearer_and_the_token(stub: StubEnvd) -> None:
    envs = SandboxEnvs(stub.url)
    try:
        assert await envs.fetch(TOKEN, "the.gateway.jwt") == ENV
    finally:
        await envs.close()
    assert stub.seen[-1]["authorization"] == "Bearer the.gateway.jwt"
    assert stub.seen[-1]["x-access-token"] == TOKEN


async def test_fetch_without_a_bearer_sends_only_the_token_and_logs_no_secret(
    stub: StubEnvd, caplog: pytest.LogCaptureFixture
) -> None:
    envs = SandboxEnvs(stub.url)
    caplog.set_level(logging.DEBUG)
    try:
        assert await envs.fetch(TOKEN) == {}  # the stub, like picod with a key, wants the JWT
        assert await envs.fetch(TOKEN, "a.wrong.jwt") == {}
    finally:
        await envs.close()
    assert "authorization" not in stub.seen[0]
    assert stub.seen[0]["x-access-token"] == TOKEN
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "401" in warnings[0].getMessage()  # once, with the status
    assert TOKEN not in caplog.text and "jwt" not in caplog.text.lower()


# --- end to end: a bound warm-pool picod and a real interpreter --------------------------


def _bearer(key: rsa.RSAPrivateKey, session_id: str) -> str:
    now = int(time.time())
    claims = {"iss": "agentcube-router", "iat": now, "exp": now + 300, "session_id": session_id}
    return jwt.encode(claims, key, algorithm="RS256")


@dataclass
class Bound:
    sandbox_id: str
    picod: Server
    interpreter: Server


@pytest.fixture(scope="module")
def bound(
    tmp_path_factory: pytest.TempPathFactory, gateway_key: tuple[rsa.RSAPrivateKey, Path]
) -> Iterator[Bound]:
    key, public_key = gateway_key
    sandbox_id = new_sandbox_id()
    tmp = tmp_path_factory.mktemp("bound")
    picod = launch(
        tmp, "picod", "--jwt-public-key", str(public_key), "--home", str(tmp), ready_status=204
    )
    interpreter = None
    try:
        init = httpx.post(
            f"{picod.url}/init",
            json={"envVars": ENV, "accessToken": TOKEN},
            headers={"Authorization": "Bearer " + _bearer(key, sandbox_id)},
        )
        assert init.status_code == 204, init.text
        interpreter = launch(
            tmp,
            "interpreter",
            *("--jwt-public-key", str(public_key), "--sandbox-id", sandbox_id),
            *("--access-token", TOKEN, "--envd-url", picod.url, "--cwd", str(tmp)),
            ready_status=200,
        )
        yield Bound(sandbox_id, picod, interpreter)
    finally:
        if interpreter is not None:
            interpreter.stop()
        picod.stop()


def _run(server: Server, code: str, headers: dict[str, str]) -> list[dict[str, object]]:
    response = httpx.post(f"{server.url}/execute", json={"code": code}, headers=headers, timeout=60)
    assert response.status_code == 200, response.text
    return [json.loads(line) for line in response.text.splitlines()]


def test_execute_sees_the_env_vars_of_a_jwt_guarded_picod(
    bound: Bound, gateway_key: tuple[rsa.RSAPrivateKey, Path]
) -> None:
    key = gateway_key[0]
    jwt_for_sandbox = _bearer(key, bound.sandbox_id)
    headers = {"Authorization": "Bearer " + jwt_for_sandbox, "X-Access-Token": TOKEN}
    lines = _run(bound.interpreter, "import os; os.environ.get('FROM_INIT')", headers)
    assert {"type": "result", "is_main_result": True, "text": "'bound'"} in lines
    for output in (bound.interpreter.output(), bound.picod.output()):
        assert TOKEN not in output and jwt_for_sandbox not in output
