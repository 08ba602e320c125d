"""Who may run code: the app in-process over ASGI, then the real SDK against a real server.

A secure sandbox's interpreter (one with an access token) runs code only for a request
carrying that token, and the gateway's JWT too when a JWT key is configured; the JWT alone,
which the edge attaches to anything it routes, is not enough. Auth passing is seen without
starting a kernel: `/execute` on an unknown context answers 404 only after auth.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from e2b import ConnectionConfig, SandboxException
from e2b_code_interpreter import Sandbox
from packaging.version import Version

from extproc.interpreter.app import InterpreterApp
from extproc.interpreter.contexts import Contexts
from extproc.interpreter.envs import SandboxEnvs
from extproc.interpreter.executing import Executor
from extproc.interpreter.settings import InterpreterSettings

from .conftest import ACCESS_TOKEN, SANDBOX_ID, Server

NO_KERNEL = {"code": "1", "context_id": "no-such-context"}  # 404 once past auth


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def bearer(key: rsa.RSAPrivateKey, session_id: str = SANDBOX_ID) -> dict[str, str]:
    now = int(time.time())
    claims = {"iss": "agentcube-router", "iat": now, "exp": now + 300, "session_id": session_id}
    return {"Authorization": "Bearer " + jwt.encode(claims, key, algorithm="RS256")}


TOKEN = {"X-Access-Token": ACCESS_TOKEN}
WRONG = {"X-Access-Token": "not-" + ACCESS_TOKEN}


@pytest.fixture
async def app_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Callable[[InterpreterSettings], httpx.AsyncClient]]:
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")  # as server.run does
    closers: list[Any] = []

    def make(settings: InterpreterSettings) -> httpx.AsyncClient:
        contexts = Contexts(settings, tmp_path)
        envs = SandboxEnvs(None)
        executor = Executor(settings, envs)
        closers.extend([executor.close, contexts.close, envs.close])
        app = InterpreterApp(settings, contexts, executor)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://i")
        closers.append(client.aclose)
        return client

    yield make
    for close in reversed(closers):
        await close()


def settings(tmp_path: Path, **fields: Any) -> InterpreterSettings:
    return InterpreterSettings(sandbox_id=SANDBOX_ID, envd_url=None, cwd=tmp_path, **fields)


async def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 401
    body = response.json()
    assert body["code"] == 401 and body["message"].startswith("unauthorized access")
    assert ACCESS_TOKEN not in response.text


async def test_secure_execute_needs_the_token_and_the_jwt(
    app_for: Callable[[InterpreterSettings], httpx.AsyncClient],
    key: rsa.RSAPrivateKey,
    tmp_path: Path,
) -> None:
    client = app_for(settings(tmp_path, access_token=ACCESS_TOKEN, jwt_public_key=public_pem(key)))
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused = {
        "nothing": {},
        "the gateway's JWT alone": bearer(key),
        "wrong token": {**WRONG, **bearer(key)},
        "token without the JWT": TOKEN,
        "token, JWT for another sandbox": {**TOKEN, **bearer(key, "iother")},
        "token, JWT signed by another key": {**TOKEN, **bearer(other)},
        "token, garbage JWT": {**TOKEN, "Authorization": "Bearer x.y.z"},
    }
    for why, headers in refused.items():
        response = await client.post("/execute", json=NO_KERNEL, headers=headers)
        await assert_refused(response)
        assert response.json()["message"], why
    response = await client.post("/execute", json=NO_KERNEL, headers={**TOKEN, **bearer(key)})
    assert response.status_code == 404, response.text
    # Any other route but /health and the contexts is held to the same rule.
    await assert_refused(await client.get("/nope", headers=bearer(key)))
    assert (await client.get("/nope", headers={**TOKEN, **bearer(key)})).status_code == 404


async def test_token_only_sandbox(
    app_for: Callable[[InterpreterSettings], httpx.AsyncClient], tmp_path: Path
) -> None:
    client = app_for(settings(tmp_path, access_token=ACCESS_TOKEN))
    for headers in ({}, WRONG):
        await assert_refused(await client.post("/execute", json=NO_KERNEL, headers=headers))
    response = await client.post("/execute", json=NO_KERNEL, headers=TOKEN)
    assert response.status_code == 404


async def test_contexts_take_either_credential(
    app_for: Callable[[InterpreterSettings], httpx.AsyncClient],
    key: rsa.RSAPrivateKey,
    tmp_path: Path,
) -> None:
    # The SDK sends no token on the context calls; behind the gateway they carry the JWT.
    client = app_for(settings(tmp_path, access_token=ACCESS_TOKEN, jwt_public_key=public_pem(key)))
    for headers in (bearer(key), TOKEN, {**TOKEN, **bearer(key)}):
        assert (await client.get("/contexts", headers=headers)).status_code == 200
        response = await client.delete("/contexts/no-such-context", headers=headers)
        assert response.status_code == 404
    for headers in ({}, {**WRONG, **bearer(key)}, {**TOKEN, "Authorization": "Bearer x.y.z"}):
        await assert_refused(await client.get("/contexts", headers=headers))
        await assert_refused(await client.post("/contexts/x/restart", headers=headers))
    assert (await client.get("/health")).status_code == 200


async def test_non_secure_sandbox_is_unchanged(
    app_for: Callable[[InterpreterSettings], httpx.AsyncClient],
    key: rsa.RSAPrivateKey,
    tmp_path: Path,
) -> None:
    client = app_for(settings(tmp_path, jwt_public_key=public_pem(key)))
    for headers in (bearer(key), {**WRONG, **bearer(key)}):  # no token to compare with
        response = await client.post("/execute", json=NO_KERNEL, headers=headers)
        assert response.status_code == 404, response.text
    await assert_refused(await client.post("/execute", json=NO_KERNEL))
    await assert_refused(await client.post("/execute", json=NO_KERNEL, headers=TOKEN))


async def test_the_right_token_runs_code(
    app_for: Callable[[InterpreterSettings], httpx.AsyncClient],
    key: rsa.RSAPrivateKey,
    tmp_path: Path,
) -> None:
    client = app_for(settings(tmp_path, access_token=ACCESS_TOKEN, jwt_public_key=public_pem(key)))
    response = await client.post(
        "/execute", json={"code": "1+1"}, headers={**TOKEN, **bearer(key)}, timeout=60
    )
    assert response.status_code == 200, response.text
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert {"type": "result", "is_main_result": True, "text": "2"} in lines
    assert lines[-1] == {"type": "end_of_execution"}


# --- the real SDK, straight at a secure sandbox's interpreter -----------------------------


def sdk(server: Server, token: str | None) -> Sandbox:
    return Sandbox(
        sandbox_id=SANDBOX_ID,
        sandbox_domain=None,
        envd_version=Version("0.6.4"),
        envd_access_token=token,
        traffic_access_token=None,
        connection_config=ConnectionConfig(sandbox_url=server.url),
    )


def test_sdk_sends_the_token_on_run_code(token_only: Server) -> None:
    assert sdk(token_only, ACCESS_TOKEN).run_code("6*7").text == "42"


@pytest.mark.parametrize("token", [None, "not-" + ACCESS_TOKEN])
def test_sdk_without_the_token_is_refused(token_only: Server, token: str | None) -> None:
    with pytest.raises(SandboxException, match="401") as caught:
        sdk(token_only, token).run_code("6*7")
    assert "unauthorized access" in str(caught.value)
