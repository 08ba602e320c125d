"""A warm-pool pod's two daemons as real processes: picod bound by `POST /init`, and the
interpreter learning that binding from picod's state directory.

Both start as k8s/sandbox-image/start.sh starts them in a pod AgentCube made before any
sandbox existed: the gateway's JWT key, no sandbox id, no access token; picod with
`--state-dir`, the interpreter with `--binding-file` in it. Until the lifecycle binds picod,
no JWT opens the interpreter; after, only a JWT for the bound sandbox, with the token the
bind set, runs code, and the code sees the env vars the bind gave.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from extproc.core.ids import new_sandbox_id

from .conftest import Server, launch

TOKEN = "warm-token-" + "5" * 20
NOT_BOUND = "unauthorized access: this sandbox is not bound yet"


def bearer(key: rsa.RSAPrivateKey, session_id: str) -> dict[str, str]:
    now = int(time.time())
    claims = {"iss": "agentcube-router", "iat": now, "exp": now + 300, "session_id": session_id}
    return {"Authorization": "Bearer " + jwt.encode(claims, key, algorithm="RS256")}


@dataclass
class Pod:
    state: Path
    picod: Server
    interpreter: Server


def start_interpreter(tmp: Path, public_key: Path, binding: Path, envd_url: str) -> Server:
    return launch(
        tmp,
        "interpreter",
        *("--jwt-public-key", str(public_key), "--binding-file", str(binding)),
        *("--envd-url", envd_url, "--cwd", str(tmp)),
        ready_status=200,
    )


@pytest.fixture(scope="module")
def pod(
    tmp_path_factory: pytest.TempPathFactory, gateway_key: tuple[rsa.RSAPrivateKey, Path]
) -> Iterator[Pod]:
    public_key = gateway_key[1]
    tmp = tmp_path_factory.mktemp("warm-pod")
    state = tmp / "state"
    picod = launch(
        tmp,
        "picod",
        *("--jwt-public-key", str(public_key), "--state-dir", str(state)),
        *("--home", str(tmp)),
        ready_status=204,
    )
    interpreter = None
    try:
        interpreter = start_interpreter(tmp, public_key, state / "binding.json", picod.url)
        yield Pod(state, picod, interpreter)
        assert interpreter.alive(), interpreter.output()
        assert picod.alive(), picod.output()
    finally:
        if interpreter is not None:
            interpreter.stop()
        picod.stop()


def execute(server: Server, headers: dict[str, str], code: str = "1") -> httpx.Response:
    return httpx.post(f"{server.url}/execute", json={"code": code}, headers=headers, timeout=60)


def assert_refused(response: httpx.Response, message: str | None = None) -> None:
    assert response.status_code == 401, response.text
    assert TOKEN not in response.text
    if message is not None:
        assert response.json()["message"] == message


def test_unbound_then_bound_through_picods_init(
    pod: Pod, gateway_key: tuple[rsa.RSAPrivateKey, Path]
) -> None:
    key = gateway_key[0]
    a, b = new_sandbox_id(), new_sandbox_id()
    interpreter = pod.interpreter.url
    assert httpx.get(f"{interpreter}/health").status_code == 200
    for headers in ({}, bearer(key, a), {**bearer(key, a), "X-Access-Token": TOKEN}):
        assert_refused(execute(pod.interpreter, headers), NOT_BOUND)
        assert_refused(httpx.get(f"{interpreter}/contexts", headers=headers), NOT_BOUND)
        response = httpx.post(f"{interpreter}/contexts", json={}, headers=headers)
        assert_refused(response, NOT_BOUND)

    # The lifecycle binds the pod: picod's /init with a JWT for the sandbox.
    init = httpx.post(
        f"{pod.picod.url}/init",
        json={"accessToken": TOKEN, "envVars": {"FROM_INIT": "warm"}},
        headers=bearer(key, a),
    )
    assert init.status_code == 204, init.text

    both = {**bearer(key, a), "X-Access-Token": TOKEN}
    response = execute(pod.interpreter, both, "import os; os.environ.get('FROM_INIT')")
    assert response.status_code == 200, response.text
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert {"type": "result", "is_main_result": True, "text": "'warm'"} in lines
    assert lines[-1] == {"type": "end_of_execution"}

    assert_refused(execute(pod.interpreter, {**bearer(key, b), "X-Access-Token": TOKEN}))
    assert_refused(execute(pod.interpreter, bearer(key, a)))  # secure: the token is needed
    assert_refused(execute(pod.interpreter, {**bearer(key, a), "X-Access-Token": "not-it"}))
    assert_refused(execute(pod.interpreter, {"X-Access-Token": TOKEN}))  # and the JWT
    # The context routes take either credential, as the SDK sends no token there.
    for headers in (bearer(key, a), {"X-Access-Token": TOKEN}):
        assert httpx.get(f"{interpreter}/contexts", headers=headers).status_code == 200
    assert_refused(httpx.get(f"{interpreter}/contexts", headers=bearer(key, b)))

    log = pod.interpreter.output()
    assert f"bound to sandbox {a}" in log and TOKEN not in log


def test_a_malformed_binding_file_keeps_it_refusing(
    tmp_path: Path, gateway_key: tuple[rsa.RSAPrivateKey, Path]
) -> None:
    key, public_key = gateway_key
    binding = tmp_path / "state" / "binding.json"
    binding.parent.mkdir()
    a = new_sandbox_id()
    binding.write_text(json.dumps({"sandboxId": a.upper(), "accessToken": TOKEN}))
    interpreter = start_interpreter(tmp_path, public_key, binding, "")
    try:
        both = {**bearer(key, a), "X-Access-Token": TOKEN}
        for _ in range(3):
            assert_refused(execute(interpreter, both), NOT_BOUND)
        log = interpreter.output()
        assert log.count("sandboxId is not a sandbox id") == 1, log
        assert TOKEN not in log
        assert interpreter.alive(), log
    finally:
        interpreter.stop()
