"""picod auth: the gateway's JWT, envd's access token, both, and what leaks on failure."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from e2b import AuthenticationException, Sandbox

if TYPE_CHECKING:
    from conftest import PicodProcess

SANDBOX = "sbxauth1"
TOKEN = "envd-token-123"


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def keys() -> tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]:
    return _key(), _key()


@pytest.fixture
def public_key_file(tmp_path: Path, keys: tuple[rsa.RSAPrivateKey, Any]) -> Path:
    path = tmp_path / "public.pem"
    path.write_bytes(
        keys[0]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return path


def sign(key: rsa.RSAPrivateKey, **overrides: Any) -> str:
    now = int(time.time())
    claims = {"iss": "agentcube-router", "iat": now, "exp": now + 300, "session_id": SANDBOX}
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm="RS256")


def run_echo(
    sdk_sandbox: Callable[..., Sandbox], picod: PicodProcess, headers: dict[str, str]
) -> str:
    return sdk_sandbox(picod.url, headers).commands.run("echo ok").stdout


def test_jwt_accepted_and_rejected(
    start_picod: Callable[..., PicodProcess],
    sdk_sandbox: Callable[..., Sandbox],
    public_key_file: Path,
    keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey],
    http: httpx.Client,
) -> None:
    good, other = keys
    picod = start_picod(jwt_public_key=public_key_file, sandbox_id=SANDBOX)
    ok = {"Authorization": f"Bearer {sign(good)}"}
    assert run_echo(sdk_sandbox, picod, ok) == "ok\n"
    bad_tokens = {
        "missing": None,
        "other key": sign(other),
        "expired": sign(good, iat=int(time.time()) - 900, exp=int(time.time()) - 600),
        "no exp": sign(good, exp=None),
        "future iat": sign(good, iat=int(time.time()) + 3600),
        "wrong sandbox": sign(good, session_id="someotherbox"),
        "HS256": jwt.encode(
            {"exp": int(time.time()) + 60, "iat": int(time.time()), "session_id": SANDBOX},
            "s" * 40,
            algorithm="HS256",
        ),
        "garbage": "not.a.jwt",
    }
    for reason, token in bad_tokens.items():
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        with pytest.raises(AuthenticationException):
            run_echo(sdk_sandbox, picod, headers)
        raw = http.post(
            f"{picod.url}/process.Process/List",
            json={},
            headers={"Connect-Protocol-Version": "1", **headers},
        )
        assert raw.status_code == 401, reason
        body = raw.json()
        assert body["code"] == 401
        assert (token or "") not in body["message"] or not token, reason
        assert "Traceback" not in raw.text and "BEGIN" not in raw.text
    # The JWT's sandbox check is what keeps one sandbox's token out of another.
    assert http.get(f"{picod.url}/health").status_code == 204


def test_access_token(
    start_picod: Callable[..., PicodProcess],
    sdk_sandbox: Callable[..., Sandbox],
    http: httpx.Client,
) -> None:
    picod = start_picod(access_token=TOKEN)
    assert run_echo(sdk_sandbox, picod, {"X-Access-Token": TOKEN}) == "ok\n"
    for wrong in ({}, {"X-Access-Token": TOKEN + "x"}, {"X-Access-Token": ""}):
        with pytest.raises(AuthenticationException):
            run_echo(sdk_sandbox, picod, wrong)
    assert http.get(f"{picod.url}/envs").status_code == 401
    assert http.get(f"{picod.url}/envs", headers={"X-Access-Token": TOKEN}).status_code == 200
    assert http.get(f"{picod.url}/health").status_code == 204
    # /init needs the token (the lifecycle service has it) and no JWT.
    assert http.post(f"{picod.url}/init", json={}).status_code == 401
    init = http.post(f"{picod.url}/init", json={}, headers={"X-Access-Token": TOKEN})
    assert init.status_code == 204


def test_both_credentials_required_when_both_configured(
    start_picod: Callable[..., PicodProcess],
    sdk_sandbox: Callable[..., Sandbox],
    public_key_file: Path,
    keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey],
) -> None:
    picod = start_picod(jwt_public_key=public_key_file, access_token=TOKEN, sandbox_id=SANDBOX)
    bearer = {"Authorization": f"Bearer {sign(keys[0])}"}
    token = {"X-Access-Token": TOKEN}
    assert run_echo(sdk_sandbox, picod, {**bearer, **token}) == "ok\n"
    for partial in (bearer, token):
        with pytest.raises(AuthenticationException):
            run_echo(sdk_sandbox, picod, partial)


def test_user_header_is_trusted_only_with_a_jwt(
    start_picod: Callable[..., PicodProcess],
    sdk_sandbox: Callable[..., Sandbox],
    public_key_file: Path,
    keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey],
) -> None:
    with_jwt = start_picod(jwt_public_key=public_key_file, sandbox_id=SANDBOX)
    headers = {"Authorization": f"Bearer {sign(keys[0])}", "x-agentcube-e2b-user": "nobody"}
    result = sdk_sandbox(with_jwt.url, headers).commands.run("id -u", cwd="/tmp")
    assert result.stdout == "65534\n"
    token_only = start_picod(access_token=TOKEN)
    headers = {"X-Access-Token": TOKEN, "x-agentcube-e2b-user": "nobody"}
    assert sdk_sandbox(token_only.url, headers).commands.run("id -un").stdout == "root\n"


def test_basic_user_selection_and_malformed_basic(
    start_picod: Callable[..., PicodProcess],
    http: httpx.Client,
) -> None:
    picod = start_picod(access_token=TOKEN)
    start = {
        "Connect-Protocol-Version": "1",
        "Content-Type": "application/json",
        "X-Access-Token": TOKEN,
    }
    bad = http.post(
        f"{picod.url}/process.Process/List",
        content=b"{}",
        headers={**start, "Authorization": "Basic !!!notbase64"},
    )
    # List ignores the user; SendSignal etc. too. Start resolves it: see below.
    assert bad.status_code == 200
    good = base64.b64encode(b"nobody:").decode()
    envelope = b'{"process":{"cmd":"/usr/bin/id","args":["-u"],"cwd":"/tmp"},"stdin":false}'
    body = b"\x00" + len(envelope).to_bytes(4, "big") + envelope
    stream_headers = {**start, "Content-Type": "application/connect+json"}
    for auth, expect in ((f"Basic {good}", b"NjU1MzQK"), ("Basic !!!", b"invalid_argument")):
        response = http.post(
            f"{picod.url}/process.Process/Start",
            content=body,
            headers={**stream_headers, "Authorization": auth},
        )
        assert expect in response.content


def test_refuses_to_start_without_auth(tmp_path: Path) -> None:
    import subprocess

    from conftest import PICOD

    def refused(*args: str) -> str:
        done = subprocess.run(
            [PICOD, "picod", "--listen", "127.0.0.1:1", *args],
            capture_output=True,
            text=True,
            timeout=30,
            env={"PATH": "/usr/bin:/bin"},
        )
        assert done.returncode == 2
        return done.stderr

    assert "no auth configured" in refused("--home", str(tmp_path / "h"))
    bad_key = tmp_path / "bad.pem"
    bad_key.write_text("not a key")
    assert "not a PEM public key" in refused("--jwt-public-key", str(bad_key))
