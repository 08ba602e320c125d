"""Signed `/files` URLs: the scheme itself, and the SDK's URLs against a picod with a token."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx
import pytest
from e2b import Sandbox
from e2b.sandbox.signature import get_signature

from extproc.core.errors import Unauthenticated
from extproc.picod import signing

if TYPE_CHECKING:
    from conftest import PicodProcess

TOKEN = "t0ken-for-signing-tests"


@pytest.mark.parametrize("expiration", [None, 60])
@pytest.mark.parametrize("user", [None, "user"])
@pytest.mark.parametrize("operation", ["read", "write"])
def test_sign_matches_the_sdk(
    operation: signing.Operation, user: str | None, expiration: int | None
) -> None:
    sdk = get_signature("dir/ü.txt", operation, user, TOKEN, expiration)
    ours = signing.sign("dir/ü.txt", operation, user or "", TOKEN, sdk["expiration"])
    assert ours == sdk["signature"]


def test_verify_rejects_every_mismatch() -> None:
    now = 1_000_000.0
    good = signing.sign("p", "read", "", TOKEN, 1_000_060)
    ok = {
        "path": "p",
        "operation": "read",
        "username": "",
        "token": TOKEN,
        "signature": good,
        "expiration": "1000060",
        "now": now,
    }
    signing.verify(**ok)  # type: ignore[arg-type]
    for change in [
        {"path": "q"},
        {"operation": "write"},
        {"username": "root"},
        {"token": "other"},
        {"expiration": "1000061"},
        {"expiration": None},
        {"expiration": "soon"},
        {"signature": good[:-1]},
        {"signature": "v2_" + good[3:]},
        {"signature": "é"},
        {"now": 1_000_061.0},  # expired
    ]:
        with pytest.raises(Unauthenticated):
            signing.verify(**{**ok, **change})  # type: ignore[arg-type]


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
    expired = signing.sign("f.txt", "read", "", TOKEN, int(time.time()) - 10)
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
