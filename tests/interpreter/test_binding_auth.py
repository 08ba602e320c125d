"""An interpreter started without a sandbox id (a warm-pool pod), in process over ASGI.

It has the gateway's JWT key but no id and no token: until picod's binding file names a
sandbox it refuses everything but /health, whatever JWT comes; then it serves that sandbox
only, with the file's access token on a secure one. Passing auth is seen without a kernel:
`/execute` on an unknown context answers 404 only after auth.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from extproc.core import binding_file
from extproc.core.binding_file import SandboxBinding
from extproc.core.ids import new_sandbox_id
from extproc.interpreter import command
from extproc.interpreter.app import InterpreterApp
from extproc.interpreter.binding import LOOK_INTERVAL_S, BindingWatch
from extproc.interpreter.contexts import Contexts
from extproc.interpreter.envs import SandboxEnvs
from extproc.interpreter.executing import Executor
from extproc.interpreter.settings import InterpreterSettings

NO_KERNEL = {"code": "1", "context_id": "no-such-context"}  # 404 once past auth
TOKEN = "bound-token-" + "0" * 16
NOT_BOUND = "unauthorized access: this sandbox is not bound yet"


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def bearer(key: rsa.RSAPrivateKey, session_id: str) -> dict[str, str]:
    now = int(time.time())
    claims = {"iss": "agentcube-router", "iat": now, "exp": now + 300, "session_id": session_id}
    return {"Authorization": "Bearer " + jwt.encode(claims, key, algorithm="RS256")}


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


def warm_settings(tmp_path: Path, key: rsa.RSAPrivateKey, **fields: Any) -> InterpreterSettings:
    fields.setdefault("binding_file", tmp_path / "state" / binding_file.FILE_NAME)
    return InterpreterSettings(
        envd_url=None, cwd=tmp_path, jwt_public_key=public_pem(key), **fields
    )


async def refused(response: httpx.Response, message: str | None = None) -> str:
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["code"] == 401 and body["message"].startswith("unauthorized access")
    assert TOKEN not in response.text
    if message is not None:
        assert body["message"] == message
    return str(body["message"])


async def every_route_refused(
    client: httpx.AsyncClient, headers: dict[str, str], message: str | None = NOT_BOUND
) -> None:
    await refused(await client.post("/execute", json=NO_KERNEL, headers=headers), message)
    await refused(await client.get("/contexts", headers=headers), message)
    await refused(await client.post("/contexts", json={}, headers=headers), message)
    await refused(await client.delete("/contexts/c", headers=headers), message)
    await refused(await client.post("/contexts/c/restart", headers=headers), message)
    await refused(await client.get("/nope", headers=headers), message)


async def test_unbound_refuses_all_but_health_until_the_file_binds_it(
    app_for: Callable[[InterpreterSettings], httpx.AsyncClient],
    key: rsa.RSAPrivateKey,
    tmp_path: Path,
) -> None:
    settings = warm_settings(tmp_path, key)
    assert settings.binding_file is not None
    client = app_for(settings)
    a, b = new_sandbox_id(), new_sandbox_id()
    token = {"X-Access-Token": TOKEN}
    assert (await client.get("/health")).status_code == 200
    for headers in ({}, bearer(key, a), {**bearer(key, a), **token}, token):
        await every_route_refused(client, headers)
    # picod has only a token, no sandbox yet: still unbound.
    binding_file.write(settings.binding_file, SandboxBinding(None, TOKEN))
    await every_route_refused(client, {**bearer(key, a), **token})

    binding_file.write(settings.binding_file, SandboxBinding(a, TOKEN))
    both = {**bearer(key, a), **token}
    assert (await client.post("/execute", json=NO_KERNEL, headers=both)).status_code == 404
    # A secure sandbox: /execute needs the file's token as well as the JWT.
    await refused(await client.post("/execute", json=NO_KERNEL, headers=bearer(key, a)))
    wrong = {**bearer(key, a), "X-Access-Token": "not-" + TOKEN}
    await refused(await client.post("/execute", json=NO_KERNEL, headers=wrong))
    # Another sandbox's JWT, even with the right token, is refused everywhere.
    await every_route_refused(client, {**bearer(key, b), **token}, message=None)
    # The contexts take either credential, the file's token included.
    for headers in (bearer(key, a), token, both):
        assert (await client.get("/contexts", headers=headers)).status_code == 200
    await refused(await client.get("/contexts"))

    # The binding is final: a file naming another sandbox later changes nothing.
    binding_file.write(settings.binding_file, SandboxBinding(b, TOKEN))
    assert (await client.post("/execute", json=NO_KERNEL, headers=both)).status_code == 404
    await refused(
        await client.post("/execute", json=NO_KERNEL, headers={**bearer(key, b), **token})
    )


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"[]",
        json.dumps({"sandboxId": "BAD-ID", "accessToken": TOKEN}).encode(),
        json.dumps({"sandboxId": 7}).encode(),
        json.dumps({"sandboxId": "a" * 20, "accessToken": "has space"}).encode(),
        json.dumps({"sandboxId": "a" * 20, "accessToken": 7}).encode(),
    ],
)
async def test_a_malformed_file_keeps_it_unbound_and_is_logged_once(
    app_for: Callable[[InterpreterSettings], httpx.AsyncClient],
    key: rsa.RSAPrivateKey,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    content: bytes,
) -> None:
    settings = warm_settings(tmp_path, key)
    assert settings.binding_file is not None
    settings.binding_file.parent.mkdir()
    settings.binding_file.write_bytes(content)
    client = app_for(settings)
    a = "a" * 20
    with caplog.at_level(logging.INFO, logger="extproc.interpreter.binding"):
        for _ in range(3):
            await every_route_refused(client, {**bearer(key, a), "X-Access-Token": TOKEN})
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, caplog.text
    assert str(settings.binding_file) in warnings[0].getMessage()
    assert TOKEN not in caplog.text

    # Fixed by a good file, it binds on the next request.
    binding_file.write(settings.binding_file, SandboxBinding(a, TOKEN))
    both = {**bearer(key, a), "X-Access-Token": TOKEN}
    assert (await client.post("/execute", json=NO_KERNEL, headers=both)).status_code == 404


async def test_no_binding_file_means_never_bound(
    app_for: Callable[[InterpreterSettings], httpx.AsyncClient],
    key: rsa.RSAPrivateKey,
    tmp_path: Path,
) -> None:
    client = app_for(warm_settings(tmp_path, key, binding_file=None))
    await every_route_refused(client, bearer(key, new_sandbox_id()))
    assert (await client.get("/health")).status_code == 200


async def test_an_explicit_sandbox_id_ignores_the_file(
    app_for: Callable[[InterpreterSettings], httpx.AsyncClient],
    key: rsa.RSAPrivateKey,
    tmp_path: Path,
) -> None:
    """Local mode and cold pods: the flags decide, as before; the file is never read."""
    own, other = new_sandbox_id(), new_sandbox_id()
    settings = warm_settings(tmp_path, key, sandbox_id=own)
    assert settings.binding_file is not None
    binding_file.write(settings.binding_file, SandboxBinding(other, TOKEN))
    client = app_for(settings)
    # Not secure (no token in the flags): the JWT for the flag's id alone runs code.
    response = await client.post("/execute", json=NO_KERNEL, headers=bearer(key, own))
    assert response.status_code == 404
    for headers in (bearer(key, other), {**bearer(key, other), "X-Access-Token": TOKEN}):
        await refused(await client.post("/execute", json=NO_KERNEL, headers=headers))


async def test_a_file_token_other_than_the_flags_one_is_refused(
    app_for: Callable[[InterpreterSettings], httpx.AsyncClient],
    key: rsa.RSAPrivateKey,
    tmp_path: Path,
) -> None:
    settings = warm_settings(tmp_path, key, access_token=TOKEN)
    assert settings.binding_file is not None
    a = new_sandbox_id()
    binding_file.write(settings.binding_file, SandboxBinding(a, "another-token"))
    client = app_for(settings)
    for token in (TOKEN, "another-token"):
        await every_route_refused(client, {**bearer(key, a), "X-Access-Token": token})
    binding_file.write(settings.binding_file, SandboxBinding(a, None))  # the flag's token stays
    await refused(await client.post("/execute", json=NO_KERNEL, headers=bearer(key, a)))
    both = {**bearer(key, a), "X-Access-Token": TOKEN}
    assert (await client.post("/execute", json=NO_KERNEL, headers=both)).status_code == 404


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_token_set_after_the_id_is_adopted(tmp_path: Path) -> None:
    """picod adopts a token that a later /init sets; the interpreter follows, looking at the
    file at most every LOOK_INTERVAL_S once it is bound."""
    path = tmp_path / binding_file.FILE_NAME
    clock = FakeClock()
    watch = BindingWatch(path, clock=clock)
    a = new_sandbox_id()
    binding_file.write(path, SandboxBinding(a, None))
    watch.refresh()
    assert (watch.sandbox_id, watch.access_token) == (a, None)
    binding_file.write(path, SandboxBinding(a, TOKEN))
    watch.refresh()  # too soon after the last look
    assert watch.access_token is None
    clock.now += LOOK_INTERVAL_S
    watch.refresh()
    assert (watch.sandbox_id, watch.access_token) == (a, TOKEN.encode())
    # Complete: the file is not looked at again.
    path.unlink()
    path.mkdir()
    clock.now += LOOK_INTERVAL_S
    watch.refresh()
    assert (watch.sandbox_id, watch.access_token) == (a, TOKEN.encode())


def test_an_unreadable_file_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / binding_file.FILE_NAME
    path.mkdir()  # a directory where the file should be: EISDIR on read
    watch = BindingWatch(path)
    with caplog.at_level(logging.INFO, logger="extproc.interpreter.binding"):
        for _ in range(3):
            watch.refresh()
    assert watch.sandbox_id is None
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1, caplog.text


def _parse(*argv: str) -> InterpreterSettings:
    parser = argparse.ArgumentParser()
    command.register(parser)
    return command.settings_from_args(parser.parse_args(argv))


def test_flags(tmp_path: Path, key: rsa.RSAPrivateKey, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SANDBOX_ID", "BINDING_FILE", "ACCESS_TOKEN", "JWT_PUBLIC_KEY", "NO_AUTH"):
        monkeypatch.delenv(command.ENV.var(name), raising=False)
    pem = tmp_path / "public.pem"
    pem.write_text(public_pem(key))
    base = ("--jwt-public-key", str(pem), "--cwd", str(tmp_path))
    with pytest.raises(ValueError, match="--binding-file"):
        _parse(*base)  # could never be bound: refused at start
    state = tmp_path / "state" / "binding.json"
    assert _parse(*base, "--binding-file", str(state)).binding_file == state
    monkeypatch.setenv(command.ENV.var("BINDING_FILE"), str(state))
    settings = _parse(*base)
    assert (settings.binding_file, settings.sandbox_id) == (state, None)
    assert _parse(*base, "--sandbox-id", "a" * 20).sandbox_id == "a" * 20
    monkeypatch.delenv(command.ENV.var("BINDING_FILE"))
    assert _parse(*base, "--sandbox-id", "a" * 20).binding_file is None
