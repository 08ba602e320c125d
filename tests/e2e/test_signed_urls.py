"""Signed file URLs from a bare HTTP client (no headers, no key) through `up`.

`up` is used header-routed (E2B_SANDBOX_URL), so the unmodified SDK builds
`E2B_SANDBOX_URL/files?path=...&signature=...`, which names no sandbox: the edge finds it by
the token that verifies the signature. Host-routed URLs (`49983-<id>.<domain>`) name it.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from e2b import Sandbox

from support.gateway import Gateway

from .js_scripts import run_js_scenario

BAD_SIGNATURE = {"code": 401, "message": "unauthorized access, invalid signature"}


@pytest.fixture
def sandbox(gateway: Gateway) -> Iterator[Sandbox]:
    sbx = Sandbox.create(timeout=120)
    yield sbx
    Sandbox.kill(sbx.sandbox_id)


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {name: values[0] for name, values in parse_qs(parts.query).items()} | changes
    return parts._replace(query=urlencode(query)).geturl()


@pytest.mark.parametrize("expiration", [None, 60])
def test_a_download_url_works_from_a_bare_client(
    gateway: Gateway, sandbox: Sandbox, expiration: int | None
) -> None:
    sandbox.files.write("report.txt", "signed and delivered")
    url = sandbox.download_url("report.txt", use_signature_expiration=expiration)
    assert url.startswith(gateway.url + "/files?") and sandbox.sandbox_id not in url
    for _ in range(3):  # the first finds the sandbox, the others come from the cache
        got = httpx.get(url)
        assert (got.status_code, got.text) == (200, "signed and delivered")


def test_an_upload_url_works_from_a_bare_client(sandbox: Sandbox) -> None:
    url = sandbox.upload_url("uploads/new.bin", use_signature_expiration=60)
    posted = httpx.post(url, files={"file": ("new.bin", b"\x00uploaded\xff")})
    assert posted.status_code == 200, posted.text
    assert posted.json()[0]["path"] == "/home/user/uploads/new.bin"
    assert sandbox.files.read("uploads/new.bin", format="bytes") == b"\x00uploaded\xff"


def test_each_sandboxs_url_reaches_only_its_own_files(gateway: Gateway) -> None:
    first, second = Sandbox.create(timeout=120), Sandbox.create(timeout=120)
    try:
        first.files.write("whose.txt", "first")
        second.files.write("whose.txt", "second")
        assert httpx.get(first.download_url("whose.txt")).text == "first"
        assert httpx.get(second.download_url("whose.txt")).text == "second"
    finally:
        Sandbox.kill(first.sandbox_id)
        Sandbox.kill(second.sandbox_id)


def test_the_user_is_part_of_what_is_signed(sandbox: Sandbox) -> None:
    sandbox.files.write("/root/only-root.txt", "root's", user="root")
    url = sandbox.download_url("/root/only-root.txt", user="root")
    got = httpx.get(url)
    assert (got.status_code, got.text) == (200, "root's")
    as_someone_else = httpx.get(with_query(url, username="user"))
    assert (as_someone_else.status_code, as_someone_else.json()) == (401, BAD_SIGNATURE)


def test_a_tampered_or_expired_url_gets_envds_401(sandbox: Sandbox) -> None:
    sandbox.files.write("report.txt", "secret")
    url = sandbox.download_url("report.txt", use_signature_expiration=60)
    assert httpx.get(url).status_code == 200
    other_path = httpx.get(with_query(url, path="/etc/passwd"))
    assert (other_path.status_code, other_path.json()) == (401, BAD_SIGNATURE)
    later = str(int(parse_qs(urlsplit(url).query)["signature_expiration"][0]) + 1)
    longer = httpx.get(with_query(url, signature_expiration=later))
    assert (longer.status_code, longer.json()) == (401, BAD_SIGNATURE)
    upload_with_read = httpx.post(url, files={"file": ("x", b"x")})
    assert (upload_with_read.status_code, upload_with_read.json()) == (401, BAD_SIGNATURE)
    expired = httpx.get(with_query(url, signature_expiration="1"))
    assert expired.status_code == 401
    assert expired.json()["message"] == "unauthorized access, signature is already expired"


def test_a_url_signed_with_no_sandboxs_token_says_nothing_about_which_exist(
    gateway: Gateway, sandbox: Sandbox
) -> None:
    url = sandbox.download_url("report.txt")
    forged = with_query(url, signature="v1_" + "A" * 42 + "E")
    got = httpx.get(forged)
    assert (got.status_code, got.json()) == (401, BAD_SIGNATURE)
    # Exactly what the same forgery gets on a URL that names the sandbox.
    named = httpx.get(forged, headers={"Host": f"49983-{sandbox.sandbox_id}.{gateway.domain}"})
    assert (named.status_code, named.json()) == (401, BAD_SIGNATURE)


def test_a_host_routed_url_works_too(gateway: Gateway, sandbox: Sandbox) -> None:
    sandbox.files.write("report.txt", "by host")
    url = sandbox.download_url("report.txt", use_signature_expiration=60)
    host = {"Host": f"49983-{sandbox.sandbox_id}.{gateway.domain}"}
    got = httpx.get(url, headers=host)
    assert (got.status_code, got.text) == (200, "by host")


def test_a_paused_sandboxs_url_gets_e2bs_answer_and_an_auto_resume_one_wakes_it(
    gateway: Gateway,
) -> None:
    plain = Sandbox.create(timeout=120)
    waking = Sandbox.create(timeout=120, lifecycle={"on_timeout": "pause", "auto_resume": True})
    try:
        for sbx in (plain, waking):
            sbx.files.write("report.txt", "awake")
            assert sbx.pause() is True
        paused = httpx.get(plain.download_url("report.txt"))
        assert paused.status_code == 502
        assert paused.json()["message"] == "The sandbox was not found"
        woken = httpx.get(waking.download_url("report.txt"))
        assert (woken.status_code, woken.text) == (200, "awake")
    finally:
        Sandbox.kill(plain.sandbox_id)
        Sandbox.kill(waking.sandbox_id)


def test_a_killed_sandboxs_url_stops_working(sandbox: Sandbox) -> None:
    sandbox.files.write("report.txt", "gone soon")
    url = sandbox.download_url("report.txt")
    assert httpx.get(url).status_code == 200
    Sandbox.kill(sandbox.sandbox_id)
    assert httpx.get(url).status_code in (401, 502)


@pytest.mark.timeout(180)
def test_the_js_sdks_urls_work_from_fetch(gateway: Gateway) -> None:
    seen = run_js_scenario(gateway, "signed")
    assert seen == {
        "downloadHasId": False,
        "download": {"status": 200, "body": "signed in js"},
        "uploadStatus": 200,
        "uploaded": "uploaded from js",
        "forged": {"status": 401, "body": BAD_SIGNATURE},
    }
