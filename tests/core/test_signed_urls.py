"""Signed `/files` URLs: the rule against the SDK's own signer, and the edge and picod
giving the same answer to the same URL.

Good URLs come from the SDK itself (`Sandbox.download_url` / `upload_url`, which call
`e2b.sandbox.signature.get_signature`); the bad ones are those URLs with one thing changed.
"""

from __future__ import annotations

import getpass
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import httpx
import pytest
from e2b import ConnectionConfig, Sandbox
from e2b.sandbox.signature import get_signature
from packaging.version import Version

from extproc.core import signed_urls
from extproc.core.errors import InvalidArgument, Unauthenticated
from extproc.edge.decision import Allow, Deny, SandboxDecider
from extproc.edge.sandbox_directory import Directory
from extproc.picod.app import Picod
from extproc.picod.settings import PicodSettings
from support.routes import running_route

TOKEN = "t0ken-for-signing-tests"
FILE = "dir/ü file+%.txt"  # characters the query encoding must carry through
DOMAIN = "e2b.test"
SANDBOX_ID = "sbxsigned"
ME = getpass.getuser()  # a named user picod can act as without switching accounts


@pytest.mark.parametrize("expiration", [None, 60])
@pytest.mark.parametrize("user", [None, "user", ME])
@pytest.mark.parametrize("operation", ["read", "write"])
def test_sign_matches_the_sdk(
    operation: signed_urls.Operation, user: str | None, expiration: int | None
) -> None:
    sdk = get_signature(FILE, operation, user, TOKEN, expiration)
    ours = signed_urls.sign(FILE, operation, user or "", TOKEN, sdk["expiration"])
    assert ours == sdk["signature"]
    assert ours.startswith("v1_") and "=" not in ours  # standard alphabet, padding stripped


# --- the vectors -------------------------------------------------------------------------


@dataclass(frozen=True)
class Vector:
    method: str
    query: str  # the raw query string, as the SDK encodes it
    status: int | None = None  # None: accepted
    message: str = ""


def _sdk(path_prefix: str) -> Sandbox:
    return Sandbox(
        sandbox_id=SANDBOX_ID,
        sandbox_domain=None,
        envd_version=Version("0.6.4"),
        envd_access_token=TOKEN,
        traffic_access_token=None,
        connection_config=ConnectionConfig(sandbox_url=f"http://{path_prefix}"),
    )


def _query_of(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def _encode(params: dict[str, str]) -> str:
    return urlencode(params, quote_via=quote)  # as the SDK's _file_url


def vectors(path: str) -> dict[str, Vector]:
    """Name -> vector for a file at `path`; the SDK's clock sets the expirations."""
    sdk = _sdk("sandbox.invalid")
    read = _query_of(sdk.download_url(path))
    read_expiring = _query_of(sdk.download_url(path, use_signature_expiration=3600))
    write = _query_of(sdk.upload_url(path))
    other_token = get_signature(path, "read", None, "not-" + TOKEN)["signature"]
    expired = get_signature(path, "read", None, TOKEN, -60)
    bad_signature = (401, signed_urls.BAD_SIGNATURE)
    bad_expiration = (401, signed_urls.BAD_EXPIRATION)

    def v(method: str, params: dict[str, str], outcome: tuple[int, str] | None = None) -> Vector:
        status, message = outcome or (None, "")
        return Vector(method, _encode(params), status, message)

    table = {
        "download": v("GET", read),
        "download, expiring": v("GET", read_expiring),
        "download, named user": v("GET", _query_of(sdk.download_url(path, user=ME))),
        "download, named user, expiring": v(
            "GET", _query_of(sdk.download_url(path, user=ME, use_signature_expiration=60))
        ),
        "upload": v("POST", write),
        "upload, named user, expiring": v(
            "POST", _query_of(sdk.upload_url(path, user=ME, use_signature_expiration=60))
        ),
        "expired": v(
            "GET",
            {
                "path": path,
                "signature": expired["signature"],
                "signature_expiration": str(expired["expiration"]),
            },
            (401, signed_urls.EXPIRED),
        ),
        "tampered path": v("GET", {**read, "path": path + "x"}, bad_signature),
        "read signature used to upload": v("POST", read, bad_signature),
        "write signature used to download": v("GET", write, bad_signature),
        "tampered user": v("GET", {**read, "username": ME}, bad_signature),
        "user dropped": v(
            "GET",
            {
                key: value
                for key, value in _query_of(sdk.download_url(path, user=ME)).items()
                if key != "username"
            },
            bad_signature,
        ),
        "wrong token": v("GET", {**read, "signature": other_token}, bad_signature),
        "expiration moved": v(
            "GET",
            {**read_expiring, "signature_expiration": read_expiring["signature_expiration"] + "0"},
            bad_signature,
        ),
        "expiration dropped": v(
            "GET",
            {key: value for key, value in read_expiring.items() if key != "signature_expiration"},
            bad_signature,
        ),
        "expiration added": v(
            "GET", {**read, "signature_expiration": str(int(time.time()) + 60)}, bad_signature
        ),
        "signature truncated": v(
            "GET", {**read, "signature": read["signature"][:-1]}, bad_signature
        ),
        "signature padded": v("GET", {**read, "signature": read["signature"] + "="}, bad_signature),
        "signature v2": v(
            "GET", {**read, "signature": "v2_" + read["signature"][3:]}, bad_signature
        ),
        "signature not ASCII": v("GET", {**read, "signature": "é"}, bad_signature),
        "no signature": v("GET", {"path": path}, (401, signed_urls.NO_CREDENTIALS)),
        "empty signature": v("GET", {**read, "signature": ""}, (401, signed_urls.NO_CREDENTIALS)),
        # One reader taking the first `path` and another the last would check one file
        # and serve another.
        "path given twice": Vector(
            "GET",
            _encode(read) + "&" + _encode({"path": path + "x"}),
            400,
            "the path query parameter is given more than once",
        ),
        "non-UTF-8 escape": Vector(
            "GET", _encode(read) + "&other=%ff", 400, "query parameters must be valid UTF-8"
        ),
    }
    for raw in [
        "soon",
        "-5",
        "+5",
        " 5",
        "5 ",
        "1_000",
        "1e9",
        "0x10",
        "",
        "²",
        "١٢٣",
        str(2**63),
        "9" * 20,
        "9" * 5000,  # past int()'s digit limit
    ]:
        shown = repr(raw) if len(raw) <= 20 else f"of {len(raw)} digits"
        table[f"malformed expiration {shown}"] = v(
            "GET", {**read, "signature_expiration": raw}, bad_expiration
        )
    return table


# Names only: the vectors are built in each test, so that their expirations count from then.
NAMES = list(vectors(FILE))


# --- the rule itself ---------------------------------------------------------------------


def _verify(vector: Vector) -> tuple[int, str] | None:
    try:
        params = signed_urls.parse_query(vector.query)
        signed_urls.verify(params, signed_urls.operation_of(vector.method), TOKEN, time.time())
    except InvalidArgument as e:
        return 400, e.message
    except Unauthenticated as e:
        return 401, e.message
    return None


@pytest.mark.parametrize("name", NAMES)
def test_verify(name: str) -> None:
    vector = vectors(FILE)[name]
    expected = None if vector.status is None else (vector.status, vector.message)
    assert _verify(vector) == expected


def test_without_a_token_nothing_verifies() -> None:
    params = signed_urls.parse_query(vectors(FILE)["download"].query)
    for token in (None, ""):
        with pytest.raises(Unauthenticated, match="valid signature"):
            signed_urls.verify(params, "read", token, time.time())


def test_expiry_is_checked_before_the_signature() -> None:
    params = {"path": "p", "signature": "v1_forged", "signature_expiration": "1000"}
    with pytest.raises(Unauthenticated) as caught:
        signed_urls.verify(params, "read", TOKEN, 2000.0)
    assert caught.value.message == signed_urls.EXPIRED


def test_expiry_boundary() -> None:
    signature = signed_urls.sign("p", "read", "", TOKEN, 1000)
    params = {"path": "p", "signature": signature, "signature_expiration": "1000"}
    signed_urls.verify(params, "read", TOKEN, 1000.0)  # valid through its last second
    with pytest.raises(Unauthenticated):
        signed_urls.verify(params, "read", TOKEN, 1000.5)


@pytest.mark.parametrize(
    ("raw", "expected"), [(None, None), ("0", 0), ("0042", 42), (str(2**63 - 1), 2**63 - 1)]
)
def test_parse_expiration(raw: str | None, expected: int | None) -> None:
    assert signed_urls.parse_expiration(raw) == expected


def test_parse_query() -> None:
    assert signed_urls.parse_query("path=a%2Fb&username=&x=1&x=2") == {
        "path": "a/b",
        "username": "",
        "x": "2",  # only the signed parameters must be unique
    }
    with pytest.raises(InvalidArgument, match="ASCII"):
        signed_urls.parse_query("path=ü")


# --- both call sites on every vector -----------------------------------------------------


Outcome = tuple[int, str] | None


@pytest.fixture
def edge_check() -> Callable[[Vector], Outcome]:
    directory = Directory()
    directory.put(running_route(SANDBOX_ID, TOKEN, endpoint_host="127.0.0.9"))
    decider = SandboxDecider(directory, DOMAIN)

    def check(vector: Vector) -> Outcome:
        decision = decider.decide(
            f"49983-{SANDBOX_ID}.{DOMAIN}", {}, vector.method, "/files?" + vector.query
        )
        if isinstance(decision, Allow):
            return None
        assert isinstance(decision, Deny), decision
        body = json.loads(decision.body)
        assert body["code"] == decision.status
        return decision.status, body["message"]

    return check


@pytest.fixture
async def picod_client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    home = tmp_path / "home"
    home.mkdir()
    app = Picod(PicodSettings(home=home, access_token=TOKEN))
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://picod") as client:
            yield client
    finally:
        app.close()


async def _picod_check(client: httpx.AsyncClient, vector: Vector) -> Outcome:
    if vector.method == "POST":
        response = await client.post(
            "/files?" + vector.query,
            content=b"uploaded",
            headers={"content-type": "application/octet-stream"},
        )
    else:
        response = await client.get("/files?" + vector.query)
    if response.status_code == 200:
        return None
    body = response.json()
    assert body["code"] == response.status_code
    return response.status_code, body["message"]


@pytest.mark.parametrize("name", NAMES)
async def test_edge_and_picod_agree(
    name: str,
    tmp_path: Path,
    edge_check: Callable[[Vector], Outcome],
    picod_client: httpx.AsyncClient,
) -> None:
    # The same vectors, for a file that exists (an absolute path: a named user's relative
    # paths resolve against that account's real home).
    target = tmp_path / "files" / FILE
    target.parent.mkdir(parents=True)
    target.write_bytes(b"content")
    vector = vectors(str(target))[name]
    expected = None if vector.status is None else (vector.status, vector.message)
    assert edge_check(vector) == expected
    assert await _picod_check(picod_client, vector) == expected
