"""Signed `/files` URLs from the SDK against a real picod with a token.

The rule itself, and the edge and picod agreeing on every vector, are in
tests/core/test_signed_urls.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx
from e2b import Sandbox

from extproc.core import signed_urls

if TYPE_CHECKING:
    from conftest import PicodProcess

TOKEN = "t0ken-for-signing-tests"


def _sandbox(picod: PicodProcess, sdk_sandbox: Callable[..., Sandbox]) -> Sandbox:
    return sdk_sandbox(picod.url, {"X-Access-Token": TOKEN})


def test_signed_urls_work_without_the_token(
    start_picod: Callable[..., PicodProcess], sdk_sandbox: Callable[..., Sandbox]
) -> None:
    picod = start_picod(access_token=TOKEN)
    sandbox = _sandbox(picod, sdk_sandbox)
    upload = sandbox.upload_url("signed/file.txt")
    r = httpx.post(upload, files={"file": ("file.txt", b"signed upload")})
    assert r.status_code == 200, r.text
    assert r.json()[0]["path"] == str(picod.home / "signed/file.txt")
    download = sandbox.download_url("signed/file.txt", use_signature_expiration=60)
    r = httpx.get(download)
    assert (r.status_code, r.content) == (200, b"signed upload")
    # The SDK's own calls use the header instead.
    assert sandbox.files.read("signed/file.txt") == "signed upload"


def test_bad_signatures_are_refused(
    start_picod: Callable[..., PicodProcess], sdk_sandbox: Callable[..., Sandbox]
) -> None:
    picod = start_picod(access_token=TOKEN)
    sandbox = _sandbox(picod, sdk_sandbox)
    sandbox.files.write("f.txt", "secret")
    files = f"{picod.url}/files"
    expired = signed_urls.sign("f.txt", "read", "", TOKEN, int(time.time()) - 10)
    refused = [
        httpx.get(files, params={"path": "f.txt"}),  # no token, no signature
        httpx.get(files, params={"path": "f.txt", "signature": "v1_garbage"}),
        httpx.get(sandbox.download_url("other.txt").replace("other.txt", "f.txt")),
        httpx.get(
            files,
            params={
                "path": "f.txt",
                "signature": expired,
                "signature_expiration": str(int(time.time()) - 10),
            },
        ),
        # a read signature does not allow a write
        httpx.post(sandbox.download_url("f.txt"), files={"file": ("f.txt", b"overwrite")}),
        httpx.get(files, params={"path": "f.txt"}, headers={"X-Access-Token": "wrong"}),
    ]
    for r in refused:
        assert (r.status_code, r.json()["code"]) == (401, 401), r.request.url
    assert sandbox.files.read("f.txt") == "secret"
