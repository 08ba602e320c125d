"""Binding a warm-pool picod to its sandbox through `POST /init`, over real HTTP.

A warm-pool picod starts with the gateway's JWT key but no sandbox id and no token; the
lifecycle service binds it with `/init` carrying a JWT for the sandbox and the token in the
body. Refusals chosen here: an `/init` JWT without `session_id`, or with a malformed one, is
401 (an unusable credential, like any other); another token than the one set is 409 (as
envd's "access token is already set").
"""

from __future__ import annotations

import json
import stat
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from e2b import AuthenticationException, Sandbox

from extproc.core import errors, signed_urls
from extproc.core.ids import new_sandbox_id

if TYPE_CHECKING:
    from conftest import PicodProcess

TOKEN = "bound-token-0123456789"
LIST = "/process.Process/List"
CONNECT = {"Connect-Protocol-Version": "1"}


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def public_key_file(tmp_path: Path, key: rsa.RSAPrivateKey) -> Path:
    path = tmp_path / "public.pem"
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


@pytest.fixture
def warm(
    start_picod: Callable[..., PicodProcess], public_key_file: Path
) -> Callable[..., PicodProcess]:
    """A picod as a warm-pool pod starts it: the JWT key, no sandbox id, no token."""

    def start(**flags: Any) -> PicodProcess:
        return start_picod(jwt_public_key=public_key_file, **flags)

    return start


def bearer(key: rsa.RSAPrivateKey, session_id: Any, **claims: Any) -> dict[str, str]:
    now = int(time.time())
    payload: dict[str, Any] = {"iss": "agentcube-router", "iat": now, "exp": now + 300}
    if session_id is not None:
        payload["session_id"] = session_id
    payload.update(claims)
    return {"Authorization": "Bearer " + jwt.encode(payload, key, algorithm="RS256")}


def init(
    http: httpx.Client, picod: PicodProcess, headers: dict[str, str], **body: Any
) -> httpx.Response:
    return http.post(f"{picod.url}/init", json=body, headers=headers)


def signed(picod: PicodProcess, path: str, operation: signed_urls.Operation, token: str) -> str:
    """A signed `/files` URL, as the SDK's `upload_url`/`download_url` make them."""
    signature = signed_urls.sign(path, operation, "", token, None)
    return f"{picod.url}/files?" + urlencode({"path": path, "signature": signature})


def listed(http: httpx.Client, picod: PicodProcess, headers: dict[str, str]) -> int:
    return http.post(f"{picod.url}{LIST}", json={}, headers={**CONNECT, **headers}).status_code


def test_unbound_picod_answers_only_health_and_init(
    warm: Callable[..., PicodProcess], key: rsa.RSAPrivateKey, http: httpx.Client
) -> None:
    picod = warm()
    any_sandbox = bearer(key, new_sandbox_id())
    assert http.get(f"{picod.url}/health").status_code == 204
    response = http.post(f"{picod.url}{LIST}", json={}, headers={**CONNECT, **any_sandbox})
    assert response.status_code == 401
    assert response.json()["message"] == "unauthorized access: this sandbox is not bound yet"
    for path in ("/envs", "/metrics", "/files?path=x"):
        assert http.get(f"{picod.url}{path}", headers=any_sandbox).status_code == 401, path


def test_bind_then_only_that_sandbox_and_token_open_it(
    warm: Callable[..., PicodProcess],
    key: rsa.RSAPrivateKey,
    http: httpx.Client,
    sdk_sandbox: Callable[..., Sandbox],
) -> None:
    picod = warm()
    a, b = new_sandbox_id(), new_sandbox_id()
    response = init(http, picod, bearer(key, a), accessToken=TOKEN, envVars={"GREETING": "hi"})
    assert response.status_code == 204, response.text
    assert "x-envd-version" in response.headers
    token = {"X-Access-Token": TOKEN}
    assert listed(http, picod, {**bearer(key, a), **token}) == 200
    assert listed(http, picod, {**bearer(key, b), **token}) == 401  # another sandbox's JWT
    assert listed(http, picod, bearer(key, a)) == 401  # the token is required now
    assert listed(http, picod, {**bearer(key, a), "X-Access-Token": TOKEN + "x"}) == 401
    assert listed(http, picod, token) == 401  # and so is the JWT
    # The env vars /init sent reach processes (commands.run is process.Process/Start).
    sandbox = sdk_sandbox(picod.url, {**bearer(key, a), **token})
    assert sandbox.commands.run("echo $GREETING").stdout == "hi\n"
    with pytest.raises(AuthenticationException):
        sdk_sandbox(picod.url, {**bearer(key, b), **token}).commands.run("echo no")
    assert "bound to sandbox " + a in picod.stderr()
    assert TOKEN not in picod.stderr()


def test_init_refuses_unusable_credentials_and_stays_unbound(
    warm: Callable[..., PicodProcess], key: rsa.RSAPrivateKey, http: httpx.Client
) -> None:
    picod = warm()
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    a = new_sandbox_id()
    long_ago = int(time.time()) - 900
    refused = {
        "no credentials": {},
        "token only": {"X-Access-Token": TOKEN},
        "no session_id": bearer(key, None),
        "malformed id (upper case, '-')": bearer(key, "SBX-" + a[4:]),
        "malformed id (short)": bearer(key, "abc"),
        "id not a string": bearer(key, 12345678901234567890),
        "another key": bearer(other_key, a),
        "expired": bearer(key, a, iat=long_ago, exp=long_ago + 300),
        "not a JWT": {"Authorization": "Bearer nonsense"},
    }
    for reason, headers in refused.items():
        response = init(http, picod, headers, accessToken=TOKEN)
        assert (response.status_code, response.json()["code"]) == (401, 401), reason
        assert TOKEN not in response.text
    # Nothing was bound by any of them: a token-holding caller with a JWT is still refused.
    assert listed(http, picod, {**bearer(key, a), "X-Access-Token": TOKEN}) == 401
    # A bad body is refused before anything is bound.
    for body in ({"accessToken": 5}, {"accessToken": ""}, {"accessToken": "has space"}):
        assert init(http, picod, bearer(key, a), **body).status_code == 400, body
    assert listed(http, picod, bearer(key, a)) == 401


def test_rebinding_is_idempotent_and_never_replaces_the_token(
    warm: Callable[..., PicodProcess], key: rsa.RSAPrivateKey, http: httpx.Client
) -> None:
    picod = warm()
    a, b = new_sandbox_id(), new_sandbox_id()
    assert init(http, picod, bearer(key, a), accessToken=TOKEN).status_code == 204
    # The lifecycle retries with the same binding: 204 however it authenticates.
    assert init(http, picod, bearer(key, a), accessToken=TOKEN).status_code == 204
    both = {**bearer(key, a), "X-Access-Token": TOKEN}
    assert init(http, picod, both, accessToken=TOKEN).status_code == 204
    # The orchestrator's path: the token alone opens /init of a bound picod.
    assert init(http, picod, {"X-Access-Token": TOKEN}, envVars={"K": "v"}).status_code == 204
    # Another token: refused, whoever asks, and the old one keeps working.
    for headers in (bearer(key, a), both):
        response = init(http, picod, headers, accessToken="another-token")
        assert response.status_code == 409, response.text
        assert "another-token" not in response.text
    assert init(http, picod, bearer(key, b), accessToken=TOKEN).status_code == 401
    assert init(http, picod, {"X-Access-Token": "wrong"}).status_code == 401
    assert init(http, picod, {**bearer(key, a), "X-Access-Token": "wrong"}).status_code == 401
    assert listed(http, picod, both) == 200
    assert listed(http, picod, {**bearer(key, a), "X-Access-Token": "another-token"}) == 401
    assert http.get(f"{picod.url}/envs", headers=both).json()["K"] == "v"


def test_bound_picod_adopts_a_token_only_when_it_has_none(
    start_picod: Callable[..., PicodProcess],
    public_key_file: Path,
    key: rsa.RSAPrivateKey,
    http: httpx.Client,
) -> None:
    a = new_sandbox_id()
    picod = start_picod(jwt_public_key=public_key_file, sandbox_id=a)
    assert listed(http, picod, bearer(key, a)) == 200
    assert init(http, picod, bearer(key, new_sandbox_id()), accessToken=TOKEN).status_code == 401
    assert init(http, picod, bearer(key, a), accessToken=TOKEN).status_code == 204
    assert listed(http, picod, bearer(key, a)) == 401
    assert listed(http, picod, {**bearer(key, a), "X-Access-Token": TOKEN}) == 200


def test_signed_urls_work_once_bound(
    warm: Callable[..., PicodProcess], key: rsa.RSAPrivateKey, http: httpx.Client
) -> None:
    picod = warm()
    a = new_sandbox_id()
    # What the edge adds to every request it routes to this sandbox.
    edge = bearer(key, a)
    files = {"file": ("f.txt", b"signed")}
    upload = signed(picod, "f.txt", "write", TOKEN)
    assert http.post(upload, files=files, headers=edge).status_code == 401
    assert init(http, picod, edge, accessToken=TOKEN).status_code == 204
    response = http.post(upload, files=files, headers=edge)
    assert response.status_code == 200, response.text
    response = http.get(signed(picod, "f.txt", "read", TOKEN), headers=edge)
    assert (response.status_code, response.content) == (200, b"signed")
    forged = signed(picod, "f.txt", "read", "not-the-token")
    assert http.get(forged, headers=edge).status_code == 401


def test_concurrent_binds_have_one_winner(
    warm: Callable[..., PicodProcess], key: rsa.RSAPrivateKey, http: httpx.Client
) -> None:
    picod = warm()
    ids = [new_sandbox_id() for _ in range(8)]
    with ThreadPoolExecutor(len(ids)) as pool:
        statuses = list(
            pool.map(
                lambda i: init(http, picod, bearer(key, i), accessToken=TOKEN).status_code, ids
            )
        )
    assert sorted(statuses) == [204] + [401] * (len(ids) - 1), statuses
    winner = ids[statuses.index(204)]
    token = {"X-Access-Token": TOKEN}
    for sandbox_id in ids:
        expected = 200 if sandbox_id == winner else 401
        assert listed(http, picod, {**bearer(key, sandbox_id), **token}) == expected
    assert picod.stderr().count("bound to sandbox") == 1

    # Same sandbox, different tokens at once: one token is set, the others conflict.
    picod = warm()
    a = new_sandbox_id()
    tokens = [f"token-{n}" for n in range(8)]
    with ThreadPoolExecutor(len(tokens)) as pool:
        statuses = list(
            pool.map(lambda t: init(http, picod, bearer(key, a), accessToken=t).status_code, tokens)
        )
    assert sorted(statuses) == [204] + [409] * (len(tokens) - 1), statuses
    kept = tokens[statuses.index(204)]
    for candidate in tokens:
        headers = {**bearer(key, a), "X-Access-Token": candidate}
        assert listed(http, picod, headers) == (200 if candidate == kept else 401)


def test_binding_survives_a_restart(
    warm: Callable[..., PicodProcess],
    key: rsa.RSAPrivateKey,
    http: httpx.Client,
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    picod = warm(state_dir=state)
    a = new_sandbox_id()
    assert init(http, picod, bearer(key, a), accessToken=TOKEN).status_code == 204
    saved = state / "binding.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert json.loads(saved.read_text()) == {"sandboxId": a, "accessToken": TOKEN}
    picod.stop()

    again = warm(state_dir=state)
    both = {**bearer(key, a), "X-Access-Token": TOKEN}
    assert listed(http, again, both) == 200
    assert listed(http, again, {**bearer(key, new_sandbox_id()), "X-Access-Token": TOKEN}) == 401
    assert listed(http, again, bearer(key, a)) == 401
    assert init(http, again, bearer(key, a), accessToken="another-token").status_code == 409
    upload = signed(again, "g.txt", "write", TOKEN)
    assert http.post(upload, files={"file": ("g", b"x")}, headers=bearer(key, a)).is_success
    # Without the state directory, the same restart comes back unbound.
    assert listed(http, warm(), both) == 401


def test_unpersistable_binding_is_refused_and_not_made(
    warm: Callable[..., PicodProcess], key: rsa.RSAPrivateKey, http: httpx.Client, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    picod = warm(state_dir=state)
    state.rmdir()
    state.write_text("a file where the directory was")
    a = new_sandbox_id()
    response = init(http, picod, bearer(key, a), accessToken=TOKEN)
    assert response.status_code == 503, response.text
    assert listed(http, picod, {**bearer(key, a), "X-Access-Token": TOKEN}) == 401
    state.unlink()
    assert init(http, picod, bearer(key, a), accessToken=TOKEN).status_code == 204


def _start_refused(tmp_path: Path, *args: str) -> str:
    from conftest import PICOD

    done = subprocess.run(
        [PICOD, "picod", "--listen", "127.0.0.1:1", "--home", str(tmp_path / "h"), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2, done.stderr
    return done.stderr


def test_a_bad_state_file_refuses_to_start(tmp_path: Path, public_key_file: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    saved = state / "binding.json"
    a = new_sandbox_id()
    base = ("--jwt-public-key", str(public_key_file), "--state-dir", str(state))
    saved.write_text(json.dumps({"sandboxId": a, "accessToken": TOKEN}))
    assert "another sandbox" in _start_refused(tmp_path, *base, "--sandbox-id", new_sandbox_id())
    assert "another access token" in _start_refused(tmp_path, *base, "--access-token", "t2")
    for bad, expected in (
        ("{not json", "not JSON"),
        ("[]", "expected a JSON object"),
        (json.dumps({"sandboxId": "BAD-ID"}), "sandboxId is not a sandbox id"),
        (json.dumps({"sandboxId": a, "accessToken": 7}), "accessToken is not a usable token"),
    ):
        saved.write_text(bad)
        stderr = _start_refused(tmp_path, *base)
        assert expected in stderr and str(saved) in stderr, stderr
        assert "Traceback" not in stderr


async def test_the_lifecycle_client_binds_a_warm_picod(
    warm: Callable[..., PicodProcess], key: rsa.RSAPrivateKey, http: httpx.Client
) -> None:
    """The contract with the lifecycle service's own client (lifecycle/picod_client.py)."""
    from extproc.lifecycle.picod_client import PicodClient

    picod = warm()
    client = PicodClient(scheme="http", port=picod.port)
    client.use_identity(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    a = new_sandbox_id()
    try:
        await client.bind("127.0.0.1", a, TOKEN, {"FROM": "lifecycle"})
        await client.bind("127.0.0.1", a, TOKEN, {"FROM": "lifecycle"})  # a retry
        assert "mem_total" in (await client.metrics("127.0.0.1", a, TOKEN))[-1]
        with pytest.raises(errors.Unavailable):
            await client.bind("127.0.0.1", new_sandbox_id(), TOKEN, {})
    finally:
        await client.close()
    envs = http.get(f"{picod.url}/envs", headers={**bearer(key, a), "X-Access-Token": TOKEN})
    assert envs.json()["FROM"] == "lifecycle"
