"""Each bug the envd fuzz (test_fuzz.py) found, as one small request against a live picod."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    from conftest import PicodProcess

UNARY = {"Connect-Protocol-Version": "1", "Content-Type": "application/json"}
STREAM = {"Connect-Protocol-Version": "1", "Content-Type": "application/connect+json"}


def envelope(payload: bytes, flags: int = 0) -> bytes:
    return bytes([flags]) + len(payload).to_bytes(4, "big") + payload


def end_code(body: bytes) -> str:
    size = int.from_bytes(body[1:5], "big")
    assert body[0] == 2 and len(body) == 5 + size, body[:200]
    code: str = json.loads(body[5:])["error"]["code"]
    return code


@pytest.fixture
def url(picod_sdk_env: PicodProcess, http: httpx.Client) -> Iterator[str]:
    yield picod_sdk_env.url
    assert picod_sdk_env.proc.poll() is None, picod_sdk_env.stderr()[-3000:]
    assert http.get(f"{picod_sdk_env.url}/health").status_code == 204


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100000 + b"]" * 100000,  # segfaulted picod: the protobuf JSON parser's C stack
        b'{"process":' + b'{"pid":' * 50000 + b"1" + b"}" * 50001,
    ],
)
def test_deeply_nested_json_is_invalid_argument(url: str, http: httpx.Client, body: bytes) -> None:
    response = http.post(f"{url}/process.Process/SendSignal", content=body, headers=UNARY)
    assert (response.status_code, response.json()["code"]) == (400, "invalid_argument")
    streamed = http.post(f"{url}/process.Process/Start", content=envelope(body), headers=STREAM)
    assert end_code(streamed.content) == "invalid_argument"


@pytest.mark.parametrize("payload", [b"not gzip", b"\x1f\x8b\x08\x00"])
def test_undecompressable_gzip_message_is_invalid_argument(
    url: str, http: httpx.Client, payload: bytes
) -> None:
    """Was a raw zlib/EOF error: a 500 on unary calls, a dropped stream on streams."""
    headers = {**STREAM, "Connect-Content-Encoding": "gzip"}
    streamed = http.post(
        f"{url}/process.Process/Start", content=envelope(payload, flags=1), headers=headers
    )
    assert end_code(streamed.content) == "invalid_argument"
    unary = {**UNARY, "Content-Encoding": "gzip"}
    response = http.post(f"{url}/process.Process/List", content=payload, headers=unary)
    assert (response.status_code, response.json()["code"]) == (400, "invalid_argument")


def test_header_value_that_is_not_utf8_is_not_a_500(url: str, http: httpx.Client) -> None:
    """connectrpc decodes every header as UTF-8; Latin-1 obs-text used to make that a 500."""
    unary = [(k.encode(), v.encode()) for k, v in UNARY.items()]
    headers = [*unary, (b"X-Anything", b"caf\xe9")]
    response = http.post(f"{url}/process.Process/List", content=b"{}", headers=headers)
    assert response.status_code == 200
    timeout = [*unary, (b"Connect-Timeout-Ms", b"\xff")]
    response = http.post(f"{url}/process.Process/List", content=b"{}", headers=timeout)
    assert response.status_code < 500


def test_multipart_boundary_over_parser_limit_is_400(url: str, http: httpx.Client) -> None:
    """python-multipart refuses boundaries over 256 bytes with an exception that was a 500."""
    boundary = "b" * 5000
    response = http.post(
        f"{url}/files?path=fz-boundary",
        content=f"--{boundary}\r\n\r\nx\r\n--{boundary}--\r\n".encode(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status_code == 400
    assert "multipart" in response.json()["message"]


def test_moving_a_directory_into_itself_is_invalid_argument(
    url: str, http: httpx.Client, workdir: str
) -> None:
    """rename(2) says EINVAL, which was a 500 `internal`."""
    body = {"source": workdir, "destination": f"{workdir}/inside"}
    response = http.post(f"{url}/filesystem.Filesystem/Move", json=body, headers=UNARY)
    assert (response.status_code, response.json()["code"]) == (400, "invalid_argument")
