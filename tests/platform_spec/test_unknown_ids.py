"""Any string in `{sandboxID}` that is not a live sandbox of the tenant is 404 through the real
gateway, on every operation that names one, never 400: not from Envoy, not from the edge's
own path parsing (ids no sandbox can have, such as `a-b`, are refused as unknown), not from
the lifecycle. The SDK then does what it does for a missing sandbox."""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest
from e2b import Sandbox
from e2b.exceptions import NotFoundException

from support.gateway import Gateway

# (method, path under /sandboxes/{id}, a well-formed body)
OPERATIONS: tuple[tuple[str, str, bytes | None], ...] = (
    ("GET", "", None),
    ("DELETE", "", None),
    ("GET", "/metrics", None),
    ("POST", "/timeout", b'{"timeout": 30}'),
    ("POST", "/refreshes", b"{}"),
    ("POST", "/pause", b"{}"),
    ("POST", "/resume", b"{}"),
    ("POST", "/connect", b'{"timeout": 30}'),
)
IDS = (
    "nonexistingsandbox",  # the SDK's own example: well-formed, unknown
    "Upper",
    "has-dash",  # no sandbox id has a '-' (hosts split on it)
    "has space",
    "a.b",
    "\u2603snowman",
    "x" * 300,
    "a/b",  # Envoy unescapes the %2F: the path names no endpoint, still 404
)


@pytest.mark.parametrize(("method", "suffix", "body"), OPERATIONS)
def test_an_unknown_id_is_404_on_every_sandbox_operation(
    api: httpx.Client, method: str, suffix: str, body: bytes | None
) -> None:
    for sandbox_id in IDS:
        path = f"/sandboxes/{quote(sandbox_id, safe='')}{suffix}"
        response = api.request(method, path, content=body)
        assert response.status_code == 404, (sandbox_id, response.text)
        error = response.json()
        assert error["code"] == 404 and isinstance(error["message"], str)


def test_the_sdk_reads_an_unknown_id_as_missing(gateway: Gateway) -> None:
    assert Sandbox.kill("nonexistingsandbox") is False
    with pytest.raises(NotFoundException):
        Sandbox.get_info("nonexistingsandbox")
