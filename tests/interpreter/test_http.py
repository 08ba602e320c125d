"""The wire itself, below the SDK: bad inputs, NDJSON framing, keepalives, the server's
own execution timeout, and auth."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from .conftest import ACCESS_TOKEN, SANDBOX_ID, Server

TOKEN = {"X-Access-Token": ACCESS_TOKEN}


def lines_of(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.text.endswith("\n")
    return [json.loads(line) for line in response.text.splitlines()]


def execute(
    url: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.post(f"{url}/execute", json=body, headers=headers or {}, timeout=30)


def test_ndjson_framing(interpreter: Server) -> None:
    response = execute(interpreter.url, {"code": "print('out')\n7"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    lines = lines_of(response)
    assert [line["type"] for line in lines] == [
        "number_of_executions",
        "stdout",
        "result",
        "end_of_execution",
    ]
    stdout = lines[1]
    assert stdout["text"] == "out\n" and isinstance(stdout["timestamp"], int)
    assert lines[2] == {"type": "result", "is_main_result": True, "text": "7"}


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (b'{"language": "python"}', 400, "'code'"),
        (b'{"code": "1", "context_id": "abc", "language": "python"}', 400, "not both"),
        (b'{"code": "1", "context_id": "no-such-context"}', 404, "not found"),
        (b'{"code": "1", "language": "cobol"}', 400, "installed: python"),
        (b'{"code": "1", "env_vars": {"A": 1}}', 400, "env_vars"),
        (b'{"code": 5}', 400, "'code'"),
    ],
)
def test_bad_execute_requests(interpreter: Server, body: bytes, status: int, fragment: str) -> None:
    response = httpx.post(f"{interpreter.url}/execute", content=body, timeout=30)
    assert response.status_code == status
    error = response.json()
    assert error["code"] == status and fragment in error["message"]
    assert execute(interpreter.url, {"code": "1"}).status_code == 200  # still serving


def test_unknown_route_and_context(interpreter: Server) -> None:
    assert httpx.get(f"{interpreter.url}/nope").status_code == 404
    response = httpx.delete(f"{interpreter.url}/contexts/missing")
    assert response.status_code == 404 and response.json()["code"] == 404


def test_health_is_open(secured: Server) -> None:
    assert httpx.get(f"{secured.url}/health").status_code == 200


def sign(key: rsa.RSAPrivateKey, **claims: Any) -> str:
    now = int(time.time())
    payload = {"iss": "agentcube-router", "iat": now, "exp": now + 300, **claims}
    return jwt.encode(payload, key, algorithm="RS256")


def test_auth(secured: Server, gateway_key: tuple[rsa.RSAPrivateKey, Path]) -> None:
    key = gateway_key[0]
    url = f"{secured.url}/contexts"
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused = {
        "nothing": {},
        "wrong token": {"X-Access-Token": "wrong"},
        "other sandbox": {"Authorization": "Bearer " + sign(key, session_id="iother")},
        "expired": {
            "Authorization": "Bearer "
            + sign(
                key, session_id=SANDBOX_ID, iat=int(time.time()) - 900, exp=int(time.time()) - 600
            )
        },
        "other key": {"Authorization": "Bearer " + sign(other, session_id=SANDBOX_ID)},
        "bad jwt with good token": {"Authorization": "Bearer x.y.z", **TOKEN},
    }
    for why, headers in refused.items():
        response = httpx.get(url, headers=headers)
        assert response.status_code == 401, why
        body = response.json()
        assert body["code"] == 401 and body["message"].startswith("unauthorized access"), why
        assert ACCESS_TOKEN not in response.text
    assert httpx.get(url, headers=TOKEN).status_code == 200
    good_jwt = {"Authorization": "Bearer " + sign(key, session_id=SANDBOX_ID)}
    assert httpx.get(url, headers=good_jwt).status_code == 200


def both(gateway_key: tuple[rsa.RSAPrivateKey, Path]) -> dict[str, str]:
    """What a secure sandbox's /execute needs: the access token and the gateway's JWT."""
    return {**TOKEN, "Authorization": "Bearer " + sign(gateway_key[0], session_id=SANDBOX_ID)}


def test_keepalive_lines_on_silence(
    secured: Server, gateway_key: tuple[rsa.RSAPrivateKey, Path]
) -> None:
    code = {"code": "import time; time.sleep(0.8); 'woke'"}
    response = execute(secured.url, code, both(gateway_key))
    types = [line["type"] for line in lines_of(response)]
    assert types.count("keepalive") >= 1
    assert types[-2:] == ["result", "end_of_execution"]


def test_server_execution_timeout_interrupts(
    secured: Server, gateway_key: tuple[rsa.RSAPrivateKey, Path]
) -> None:
    headers = both(gateway_key)
    execute(secured.url, {"code": "survivor = 'alive'"}, headers)
    lines = lines_of(execute(secured.url, {"code": "while True: pass"}, headers))
    errors = [line for line in lines if line["type"] == "error"]
    assert len(errors) == 1 and errors[0]["name"] == "TimeoutError"
    assert lines[-1] == {"type": "end_of_execution"}
    after = lines_of(execute(secured.url, {"code": "survivor"}, headers))
    assert {"type": "result", "is_main_result": True, "text": "'alive'"} in after
