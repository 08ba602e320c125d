"""edge/decision.py as tables: the ext_authz decision from request facts, with no server.

Expected answers come from the module's contract and E2B's (notes §7): platform errors are
`{"code","message"}`, a dead or paused sandbox is the client-proxy's 502 "was not found",
a bad envd token is envd's 401, a missing or wrong traffic token the proxy's 403, internal
envd paths 404 by the path a server would route, and signed `/files` URLs are checked here.
"""

from __future__ import annotations

import base64
import hashlib
import json
from types import MappingProxyType
from urllib.parse import quote, urlencode

import pytest

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc.core import signed_urls
from extproc.core.api_keys import KeyEntry, KeyIndex, KeyStatus, hash_api_key
from extproc.core.errors import Unauthenticated
from extproc.core.hosts import Target
from extproc.edge.decision import (
    BAD_TOKEN,
    BAD_USER,
    EXPIRED_KEY,
    INTERNAL_PATH,
    INVALID_KEY,
    MISSING_KEY,
    REVOKED_KEY,
    Allow,
    Deny,
    Locate,
    Miss,
    Resume,
    SandboxDecider,
    check_signature_shape,
    decide_platform,
    normalized_path,
    not_found,
    port_not_open,
    traffic_denied,
)
from extproc.edge.sandbox_directory import Directory, Route

DOMAIN = "e2b.test"
NOW = 1_800_000_000.0
HOST_IP = "10.213.0.2"

# -- the platform API key -------------------------------------------------------------------

KEY = "e2b_" + "a" * 40
KEY_REVOKED = "e2b_" + "b" * 40
KEY_EXPIRED = "e2b_" + "c" * 40
INDEX = KeyIndex(
    MappingProxyType(
        {
            hash_api_key(key): KeyEntry(hash_api_key(key), status, "team-a", "")
            for key, status in (
                (KEY, KeyStatus.VALID),
                (KEY_REVOKED, KeyStatus.REVOKED),
                (KEY_EXPIRED, KeyStatus.EXPIRED),
            )
        }
    ),
    "default",
)


@pytest.mark.parametrize(
    ("api_key", "expected"),
    [
        (KEY, Allow(tenant="team-a", key_hash=hash_api_key(KEY)[:12])),
        (None, MISSING_KEY),
        ("", MISSING_KEY),
        (KEY_REVOKED, REVOKED_KEY),
        (KEY_EXPIRED, EXPIRED_KEY),
        ("e2b_" + "d" * 40, INVALID_KEY),
        (KEY.upper(), INVALID_KEY),  # keys are compared exactly, no normalisation
        (KEY + " ", INVALID_KEY),
        (" " + KEY, INVALID_KEY),
        (KEY[:-1], INVALID_KEY),
        (hash_api_key(KEY), INVALID_KEY),  # the stored hash is no key
        ("e2b_\udcff", INVALID_KEY),  # a lone surrogate is hashed, not a crash
        ("ключ", INVALID_KEY),
    ],
)
def test_platform_key(api_key: str | None, expected: Allow | Deny) -> None:
    assert decide_platform(INDEX, api_key) == expected


# -- sandbox requests -------------------------------------------------------------------------


def _route(sandbox_id: str, **fields: object) -> Route:
    values: dict[str, object] = {
        "sandbox_id": sandbox_id,
        "endpoint_host": HOST_IP,
        "tenant": "team-a",
        "state": pb.SANDBOX_STATE_RUNNING,
        "envd_access_token": f"tok-{sandbox_id}",
        "secure": True,
        "end_at": NOW + 60,
    }
    values.update(fields)
    return Route(**values)  # type: ignore[arg-type]


K8S_TOKEN = "tok-k8s"
ROUTES = {
    "run": _route("run"),
    "other": _route("other", tenant="team-b"),
    "insecure": _route("insecure", secure=False, envd_access_token=""),
    "paused": _route("paused", state=pb.SANDBOX_STATE_PAUSED, endpoint_host=""),
    "wake": _route(
        "wake", state=pb.SANDBOX_STATE_PAUSED, endpoint_host="", auto_resume=True, end_at=NOW - 10
    ),
    "ended": _route("ended", end_at=NOW - 1),
    "endsnow": _route("endsnow", end_at=NOW),
    "forever": _route("forever", end_at=0.0),  # 0: end unknown, not past
    "starting": _route("starting", state=pb.SANDBOX_STATE_STARTING, endpoint_host=""),
    "private": _route("private", public_traffic=False, traffic_access_token="tt-private"),
    "nominted": _route("nominted", public_traffic=False, traffic_access_token=""),
    "k8s": _route(
        "k8s",
        envd_access_token="",
        access_token_sha256=hashlib.sha256(K8S_TOKEN.encode()).digest(),
        open_ports=frozenset({49983, 49999}),
    ),
}


def _decider() -> SandboxDecider:
    directory = Directory()
    for route in ROUTES.values():
        directory.put(route)
    return SandboxDecider(directory, DOMAIN, clock=lambda: NOW)


def allow(sandbox_id: str, port: int = 49983, user: str = "") -> Allow:
    return Allow(
        tenant="team-a", sandbox_id=sandbox_id, upstream_host=f"{HOST_IP}:{port}", user=user
    )


def json_error(status: int, message: str, reason: str) -> Deny:
    """The `{"code","message"}` body every platform-style denial has."""
    return Deny(status, json.dumps({"code": status, "message": message}), reason)


def bad_signature(message: str) -> Deny:
    return json_error(401, message, "bad_signature")


def basic(user_and_password: bytes) -> str:
    return "Basic " + base64.b64encode(user_and_password).decode()


def token(sandbox_id: str) -> dict[str, str]:
    return {"x-access-token": f"tok-{sandbox_id}"}


def traffic(value: str) -> dict[str, str]:
    """A user port's traffic token header, as sent."""
    return {"e2b-traffic-access-token": value}


# An envd RPC: neither `GET /health` nor `/files`, so only X-Access-Token opens it.
RPC = "/process.Process/Start"


def host(sandbox_id: str, port: int = 49983) -> str:
    return f"{port}-{sandbox_id}.{DOMAIN}"


WRONG_TRAFFIC_TOKEN = traffic_denied("private", missing=False)

# (host, headers, method, path, expected)
SANDBOX_ROWS = [
    # The envd token.
    (host("run"), token("run"), "POST", RPC, allow("run")),
    (host("run"), {}, "POST", "/process.Process/Start", BAD_TOKEN),
    (host("run"), {"x-access-token": ""}, "POST", RPC, BAD_TOKEN),
    (host("run"), {"x-access-token": "tok-ru"}, "POST", RPC, BAD_TOKEN),
    (host("run"), {"x-access-token": "tok-run "}, "POST", RPC, BAD_TOKEN),
    (host("run"), {"x-access-token": "TOK-RUN"}, "POST", RPC, BAD_TOKEN),
    (host("run"), token("other"), "POST", RPC, BAD_TOKEN),  # another sandbox's token
    (host("run"), {"authorization": "Bearer tok-run"}, "POST", RPC, BAD_TOKEN),
    # a lone surrogate is a wrong token like any other, not an encoding error
    (host("run"), {"x-access-token": "tok-\udcff"}, "POST", RPC, BAD_TOKEN),
    (host("insecure"), {}, "POST", RPC, allow("insecure")),
    # `/files` without a token wants a signature: envd's message says so.
    (host("run"), {}, "GET", "/files?path=a", bad_signature(signed_urls.NO_CREDENTIALS)),
    (host("run"), token("other"), "GET", "/files", bad_signature(signed_urls.NO_CREDENTIALS)),
    (
        host("k8s"),
        {"x-access-token": ""},
        "POST",
        "/files",
        bad_signature(signed_urls.NO_CREDENTIALS),
    ),
    # Only `GET /health` exactly (query aside) is open without a token.
    (host("run"), {}, "GET", "/health", allow("run")),
    (host("run"), {}, "GET", "/health?probe=1", allow("run")),
    (host("run"), {"x-access-token": "wrong"}, "GET", "/health", allow("run")),
    (host("run"), {}, "POST", "/health", BAD_TOKEN),
    (host("run"), {}, "HEAD", "/health", BAD_TOKEN),
    (host("run"), {}, "GET", "/health/", BAD_TOKEN),
    (host("run"), {}, "GET", "/%68ealth", BAD_TOKEN),  # an odd spelling of the open path
    (host("run"), {}, "GET", "//health", BAD_TOKEN),
    (host("run"), {}, "GET", "/HEALTH", BAD_TOKEN),
    # Internal envd paths: 404 by the normalised path, whatever the token, before the lookup.
    (host("run"), token("run"), "POST", "/init", INTERNAL_PATH),
    (host("run"), token("run"), "POST", "/%69nit", INTERNAL_PATH),
    (host("run"), token("run"), "POST", "/%69%6E%69%74", INTERNAL_PATH),
    (host("run"), token("run"), "POST", "//init", INTERNAL_PATH),
    (host("run"), token("run"), "POST", "/./init", INTERNAL_PATH),
    (host("run"), token("run"), "POST", "/files/../init", INTERNAL_PATH),
    (host("run"), token("run"), "POST", "/%2e%2e/init", INTERNAL_PATH),
    (host("run"), token("run"), "POST", "/..%2finit", INTERNAL_PATH),
    (host("run"), token("run"), "POST", "/%2Finit", INTERNAL_PATH),
    (host("run"), token("run"), "POST", "\\init", INTERNAL_PATH),
    (host("run"), token("run"), "POST", "/%5cinit", INTERNAL_PATH),
    (host("run"), token("run"), "POST", "/init?x=1", INTERNAL_PATH),
    (host("run"), token("run"), "POST", "/init#frag", INTERNAL_PATH),
    (host("run"), token("run"), "POST", "/freeze", INTERNAL_PATH),
    (host("run"), token("run"), "POST", "/unfreeze", INTERNAL_PATH),
    (host("run"), token("run"), "POST", "/collapse", INTERNAL_PATH),
    (host("run"), token("run"), "POST", "/fsfreeze", INTERNAL_PATH),
    (host("run"), token("run"), "POST", "/fsthaw", INTERNAL_PATH),
    (host("nosuch"), {}, "POST", "/init", INTERNAL_PATH),  # no hint whether it exists
    (host("run"), token("run"), "POST", "/init/", allow("run")),  # a different route
    (host("run"), token("run"), "POST", "/initx", allow("run")),
    (host("run"), token("run"), "POST", "/INIT", allow("run")),  # routes are case-sensitive
    (host("run", 3000), {}, "POST", "/init", allow("run", 3000)),  # a user's server
    # Sandbox states: paused, ended, starting and unknown ones.
    (host("nosuch"), {}, "POST", RPC, Miss(Target("nosuch", 49983))),
    (host("paused"), token("paused"), "POST", RPC, not_found("paused")),
    (host("paused"), {}, "GET", "/health", not_found("paused")),
    (host("ended"), token("ended"), "POST", RPC, not_found("ended")),
    (host("endsnow"), token("endsnow"), "POST", RPC, not_found("endsnow")),
    (host("forever"), token("forever"), "POST", RPC, allow("forever")),
    (host("starting"), token("starting"), "POST", RPC, not_found("starting")),
    # autoResume: resumed only if every other check passes (its end time may be past).
    (host("wake"), token("wake"), "POST", RPC, Resume(Target("wake", 49983), ROUTES["wake"])),
    (host("wake"), {}, "POST", RPC, BAD_TOKEN),
    (host("wake"), token("run"), "POST", RPC, BAD_TOKEN),
    (host("wake"), token("wake"), "POST", "/init", INTERNAL_PATH),
    (host("wake"), {**token("wake"), "authorization": basic(b"bad user:")}, "POST", RPC, BAD_USER),
    # User ports and the traffic access token (envd's port never needs it).
    (host("run", 3000), {}, "GET", "/", allow("run", 3000)),
    (host("run", 49999), {}, "POST", "/execute", allow("run", 49999)),
    (host("private", 3000), {}, "GET", "/", traffic_denied("private", missing=True)),
    (host("private", 3000), traffic(""), "GET", "/", traffic_denied("private", missing=True)),
    (host("private", 3000), traffic("tt-privat"), "GET", "/", WRONG_TRAFFIC_TOKEN),
    (host("private", 3000), traffic("tt-private\x00"), "GET", "/", WRONG_TRAFFIC_TOKEN),
    (host("private", 3000), traffic("tt-private"), "GET", "/", allow("private", 3000)),
    (host("private", 3000), token("private"), "GET", "/", traffic_denied("private", missing=True)),
    (host("private"), token("private"), "POST", RPC, allow("private")),
    # A traffic token never minted matches nothing, not even an empty header.
    (host("nominted", 3000), traffic(""), "GET", "/", traffic_denied("nominted", missing=True)),
    (host("nominted", 3000), traffic("x"), "GET", "/", traffic_denied("nominted", missing=False)),
    # Kubernetes mode: only the token's digest is known; the template's ports only.
    (host("k8s"), {"x-access-token": K8S_TOKEN}, "POST", RPC, allow("k8s")),
    (host("k8s"), {"x-access-token": "tok-k8"}, "POST", RPC, BAD_TOKEN),
    (host("k8s"), {"x-access-token": ""}, "POST", RPC, BAD_TOKEN),
    (
        host("k8s"),
        {"x-access-token": hashlib.sha256(K8S_TOKEN.encode()).hexdigest()},
        "POST",
        RPC,
        BAD_TOKEN,
    ),
    (host("k8s", 49999), {}, "POST", "/execute", allow("k8s", 49999)),
    (host("k8s", 3000), {}, "GET", "/", port_not_open("k8s", 3000)),
    (host("k8s", 3000), {"x-access-token": K8S_TOKEN}, "GET", "/", port_not_open("k8s", 3000)),
    # The user from `Authorization: Basic base64(user:)`; anything else names no user.
    (
        host("run"),
        {**token("run"), "authorization": basic(b"user:")},
        "POST",
        RPC,
        allow("run", user="user"),
    ),
    (
        host("run"),
        {**token("run"), "authorization": basic(b"root:")},
        "POST",
        RPC,
        allow("run", user="root"),
    ),
    (
        host("run"),
        {**token("run"), "authorization": "bAsIc " + basic(b"root:")[6:]},
        "POST",
        RPC,
        allow("run", user="root"),
    ),
    (
        host("run"),
        {**token("run"), "authorization": basic(b"ab" + b"c" * 30 + b":")},
        "POST",
        RPC,
        allow("run", user="ab" + "c" * 30),
    ),
    (host("run"), {**token("run"), "authorization": basic(b":")}, "POST", RPC, allow("run")),
    (host("run"), {**token("run"), "authorization": "Bearer x"}, "POST", RPC, allow("run")),
    (host("run"), {**token("run"), "authorization": ""}, "POST", RPC, allow("run")),
    (
        host("run"),
        {**token("run"), "authorization": basic(b"abc" + b"c" * 30 + b":")},
        "POST",
        RPC,
        BAD_USER,
    ),
    (
        host("run"),
        {**token("run"), "authorization": basic(b"user\r\nx-evil: 1:")},
        "POST",
        RPC,
        BAD_USER,
    ),
    (host("run"), {**token("run"), "authorization": basic(b"User:")}, "POST", RPC, BAD_USER),
    (host("run"), {**token("run"), "authorization": basic(b"-user:")}, "POST", RPC, BAD_USER),
    (host("run"), {**token("run"), "authorization": basic(b"../root:")}, "POST", RPC, BAD_USER),
    (
        host("run"),
        {**token("run"), "authorization": basic("usér:".encode())},
        "POST",
        RPC,
        BAD_USER,
    ),
    (host("run"), {**token("run"), "authorization": basic(b"\xff\xfe:")}, "POST", RPC, BAD_USER),
    (host("run"), {**token("run"), "authorization": "Basic !!notbase64"}, "POST", RPC, BAD_USER),
    (
        host("run"),
        {**token("run"), "authorization": "Basic dXNlcjo"},
        "POST",
        RPC,
        BAD_USER,
    ),  # padding missing
    # Header routing on the shared hosts, and what a bad target gets (E2B's texts, as JSON).
    (
        f"sandbox.{DOMAIN}",
        {**token("run"), "e2b-sandbox-id": "run", "e2b-sandbox-port": "49983"},
        "POST",
        RPC,
        allow("run"),
    ),
    (
        "127.0.0.1:8080",
        {**token("run"), "e2b-sandbox-id": "run", "e2b-sandbox-port": "49983"},
        "POST",
        RPC,
        allow("run"),
    ),
    (
        "localhost",
        {"e2b-sandbox-id": "run", "e2b-sandbox-port": "3000"},
        "GET",
        "/",
        allow("run", 3000),
    ),
    (
        "localhost",
        {"e2b-sandbox-id": "run"},
        "GET",
        "/",
        json_error(400, "missing header", "bad_target"),
    ),
    (
        "localhost",
        {"e2b-sandbox-id": "RUN", "e2b-sandbox-port": "49983"},
        "GET",
        "/",
        json_error(400, "Invalid sandbox ID", "bad_target"),
    ),
    (
        "localhost",
        {"e2b-sandbox-id": "run", "e2b-sandbox-port": "70000"},
        "GET",
        "/",
        json_error(400, "Invalid sandbox port", "bad_target"),
    ),
    (f"sandbox.{DOMAIN}", {}, "POST", RPC, json_error(400, "Invalid host", "bad_target")),
    (f"api.{DOMAIN}", {}, "GET", "/sandboxes", json_error(400, "Invalid host", "bad_target")),
    # The routing headers cannot move a sandbox host's request to another sandbox.
    (
        host("run"),
        {**token("other"), "e2b-sandbox-id": "other", "e2b-sandbox-port": "49983"},
        "POST",
        RPC,
        BAD_TOKEN,
    ),
]


@pytest.mark.parametrize(("host", "headers", "method", "path", "expected"), SANDBOX_ROWS)
def test_sandbox_request(
    host: str, headers: dict[str, str], method: str, path: str, expected: object
) -> None:
    assert _decider().decide(host, headers, method, path) == expected


def test_a_miss_decided_again_with_the_fallback_route() -> None:
    """After a Miss the adapter reads the route and decides again with it."""
    decider = _decider()
    late = _route("late")
    assert decider.decide(host("late"), token("late"), "POST", RPC) == Miss(Target("late", 49983))
    assert decider.decide(host("late"), token("late"), "POST", RPC, late) == allow("late")
    assert decider.decide(host("late"), token("run"), "POST", RPC, late) == BAD_TOKEN


# -- signed /files URLs ---------------------------------------------------------------------


def signed(
    sandbox_id: str = "run",
    method: str = "GET",
    path: str = "notes/a.txt",
    username: str = "",
    expiration: int | None = None,
    token_: str | None = None,
) -> str:
    """A `/files` URL signed the way the SDK signs it."""
    operation = signed_urls.operation_of(method)
    secret = token_ if token_ is not None else f"tok-{sandbox_id}"
    signature = signed_urls.sign(path, operation, username, secret, expiration)
    params = {"path": path, "username": username, "signature": signature}
    if expiration is not None:
        params["signature_expiration"] = str(expiration)
    return "/files?" + urlencode(params)


SIGNATURE = signed_urls.sign("notes/a.txt", "read", "", "tok-run", None)
ALIEN = signed_urls.sign("notes/a.txt", "read", "", "not-a-token", None)
# As they appear in a query string.
Q_SIGNATURE, Q_ALIEN = quote(SIGNATURE, safe=""), quote(ALIEN, safe="")
SHARED = f"sandbox.{DOMAIN}"
FUTURE = int(NOW) + 60
PAST = int(NOW) - 1


SIGNED_ROWS = [
    # Named by the host: verified here against the sandbox's token.
    (host("run"), "GET", signed(), allow("run")),
    (host("run"), "POST", signed(method="POST"), allow("run")),
    (host("run"), "GET", signed(expiration=FUTURE), allow("run")),
    (host("run"), "GET", signed(username="root"), allow("run")),
    (host("run"), "GET", signed("other"), bad_signature(signed_urls.BAD_SIGNATURE)),
    (host("run"), "POST", signed(), bad_signature(signed_urls.BAD_SIGNATURE)),  # read for write
    (host("run"), "GET", signed(method="POST"), bad_signature(signed_urls.BAD_SIGNATURE)),
    (host("run"), "GET", signed(expiration=PAST), bad_signature(signed_urls.EXPIRED)),
    (
        host("run"),
        "GET",
        signed(expiration=FUTURE).replace(str(FUTURE), str(FUTURE + 1)),
        bad_signature(signed_urls.BAD_SIGNATURE),
    ),
    (
        host("run"),
        "GET",
        signed().replace("a.txt", "b.txt"),
        bad_signature(signed_urls.BAD_SIGNATURE),
    ),
    (host("run"), "GET", "/files?path=a", bad_signature(signed_urls.NO_CREDENTIALS)),
    (host("run"), "GET", "/files?path=a&signature=", bad_signature(signed_urls.NO_CREDENTIALS)),
    (
        host("run"),
        "GET",
        f"/files?path=a&signature={Q_SIGNATURE}&signature_expiration=1e12",
        bad_signature(signed_urls.BAD_EXPIRATION),
    ),
    (
        host("run"),
        "GET",
        f"/files?path=a&signature={Q_SIGNATURE}&signature_expiration=-1",
        bad_signature(signed_urls.BAD_EXPIRATION),
    ),
    (
        host("run"),
        "GET",
        f"/files?path=a&signature={Q_SIGNATURE}&signature_expiration=%C2%B2",
        bad_signature(signed_urls.BAD_EXPIRATION),
    ),
    (
        host("run"),
        "GET",
        f"/files?path=a&signature={Q_SIGNATURE}&signature_expiration={2**63}",
        bad_signature(signed_urls.BAD_EXPIRATION),
    ),
    (
        host("run"),
        "GET",
        signed() + "&path=other",
        json_error(400, "the path query parameter is given more than once", "bad_query"),
    ),
    (
        host("run"),
        "GET",
        signed() + "&x=é",
        json_error(400, "the query string must be ASCII (percent-encode the rest)", "bad_query"),
    ),
    (host("run"), "DELETE", signed(), BAD_TOKEN),  # only GET and POST may be signed
    (host("run"), "GET", signed().replace("/files?", "/files/?"), BAD_TOKEN),
    (host("run"), "GET", signed().replace("/files?", "//files?"), BAD_TOKEN),
    # Kubernetes mode holds only the digest: the public checks here, the HMAC in picod.
    (host("k8s"), "GET", signed("k8s", token_=K8S_TOKEN), allow("k8s")),
    (host("k8s"), "GET", f"/files?path=a&signature={Q_ALIEN}", allow("k8s")),
    (
        host("k8s"),
        "GET",
        "/files?path=a&signature=v1_short",
        bad_signature(signed_urls.BAD_SIGNATURE),
    ),
    (
        host("k8s"),
        "GET",
        signed("k8s", token_=K8S_TOKEN, expiration=PAST),
        bad_signature(signed_urls.EXPIRED),
    ),
    # Naming no sandbox, on a shared host: public checks, then Locate.
    (
        SHARED,
        "GET",
        signed(),
        Locate({"path": "notes/a.txt", "username": "", "signature": SIGNATURE}, "read"),
    ),
    (
        "127.0.0.1:8080",
        "POST",
        signed(method="POST"),
        Locate(
            {
                "path": "notes/a.txt",
                "username": "",
                "signature": signed_urls.sign("notes/a.txt", "write", "", "tok-run", None),
            },
            "write",
        ),
    ),
    (
        "[::1]:8080",
        "GET",
        f"/files?path=a&signature={Q_ALIEN}",
        Locate({"path": "a", "signature": ALIEN}, "read"),
    ),
    (SHARED, "GET", "/files?path=a", bad_signature(signed_urls.NO_CREDENTIALS)),
    (SHARED, "GET", "/files?path=a&signature=v1_short", bad_signature(signed_urls.BAD_SIGNATURE)),
    (
        SHARED,
        "GET",
        f"/files?path=a&signature={Q_SIGNATURE}&signature_expiration={PAST}",
        bad_signature(signed_urls.EXPIRED),
    ),
    (
        SHARED,
        "GET",
        signed() + "&signature=" + Q_SIGNATURE,
        json_error(400, "the signature query parameter is given more than once", "bad_query"),
    ),
    # Not a signed-URL request on a shared host: routed as any other request.
    (SHARED, "PUT", signed(), json_error(400, "Invalid host", "bad_target")),
    ("evil.example", "GET", signed(), json_error(400, "Invalid host", "bad_target")),
    ("[not-an-ip]", "GET", signed(), json_error(400, "Invalid host", "bad_target")),
]


@pytest.mark.parametrize(("host", "method", "path", "expected"), SIGNED_ROWS)
def test_signed_url(host: str, method: str, path: str, expected: object) -> None:
    assert _decider().decide(host, {}, method, path) == expected


def test_routing_headers_take_a_signed_url_off_the_locate_path() -> None:
    headers = {"e2b-sandbox-id": "run", "e2b-sandbox-port": "49983"}
    assert _decider().decide(SHARED, headers, "GET", signed()) == allow("run")
    assert _decider().decide(SHARED, headers, "GET", signed("other")) == bad_signature(
        signed_urls.BAD_SIGNATURE
    )


# -- the pure helpers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/files", "/files"),
        ("/files?path=/init", "/files"),
        ("/files#x", "/files"),
        ("/", "/"),
        ("/init/", "/init/"),  # a trailing slash stays
        ("//init", "/init"),
        ("///a////b", "/a/b"),
        ("/a/./b", "/a/b"),
        ("/a/../b", "/b"),
        ("/../../init", "/init"),  # never above the root
        ("/a/.", "/a/"),
        ("/a/..", "/"),
        ("/%2e%2e/init", "/init"),
        ("/%2E/init", "/init"),
        ("/%252e%252e/init", "/%2e%2e/init"),  # decoded once, as a server decodes
        ("\\init", "/init"),
        ("/a\\..\\init", "/init"),
        ("/%5C%5Cinit", "/init"),
        ("/%2finit", "/init"),
        ("/%69nit", "/init"),
        ("/%ff", "/\ufffd"),  # not UTF-8: replaced, never a crash
        ("/%", "/%"),
        ("/a%00b", "/a\x00b"),
        ("/...", "/..."),
        ("/.hidden", "/.hidden"),
    ],
)
def test_normalized_path(path: str, expected: str) -> None:
    assert normalized_path(path) == expected


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"signature": SIGNATURE}, None),
        ({"signature": SIGNATURE, "signature_expiration": str(FUTURE)}, None),
        ({"signature": SIGNATURE, "signature_expiration": str(int(NOW))}, None),  # not past
        ({}, signed_urls.NO_CREDENTIALS),
        ({"signature": ""}, signed_urls.NO_CREDENTIALS),
        ({"signature": SIGNATURE, "signature_expiration": str(PAST)}, signed_urls.EXPIRED),
        ({"signature": SIGNATURE, "signature_expiration": ""}, signed_urls.BAD_EXPIRATION),
        ({"signature": SIGNATURE, "signature_expiration": " 1"}, signed_urls.BAD_EXPIRATION),
        ({"signature": SIGNATURE, "signature_expiration": "1" * 20}, signed_urls.BAD_EXPIRATION),
        ({"signature": SIGNATURE[3:]}, signed_urls.BAD_SIGNATURE),  # no v1_ prefix
        ({"signature": "v2_" + SIGNATURE[3:]}, signed_urls.BAD_SIGNATURE),
        ({"signature": SIGNATURE + "="}, signed_urls.BAD_SIGNATURE),
        ({"signature": SIGNATURE[:-1]}, signed_urls.BAD_SIGNATURE),
        ({"signature": SIGNATURE[:-1] + "B"}, signed_urls.BAD_SIGNATURE),  # non-canonical end
        ({"signature": SIGNATURE.replace(SIGNATURE[5], "-")}, signed_urls.BAD_SIGNATURE),
        ({"signature": SIGNATURE + "\n"}, signed_urls.BAD_SIGNATURE),
        # an expired, malformed signature says "expired": the public check comes first
        ({"signature": "v1_x", "signature_expiration": str(PAST)}, signed_urls.EXPIRED),
    ],
)
def test_signature_shape(params: dict[str, str], expected: str | None) -> None:
    try:
        check_signature_shape(params, NOW)
    except Unauthenticated as error:
        assert error.message == expected
    else:
        assert expected is None


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        (SHARED, True),
        (SHARED.upper() + ":443", True),
        ("localhost", True),
        ("localhost:8080", True),
        ("127.0.0.1", True),
        ("127.0.0.1:8080", True),
        ("[::1]", True),
        ("[::1]:8080", True),
        ("::1", True),
        ("", False),
        ("[::1", False),
        ("[not-an-ip]", False),
        (f"49983-run.{DOMAIN}", False),
        (f"api.{DOMAIN}", False),
        (SHARED + ".", False),
        (SHARED + ".evil.example", False),
        ("localhost.evil.example", False),
        ("0127.0.0.1", False),
        ("2130706433", False),
    ],
)
def test_is_shared_host(host: str, expected: bool) -> None:
    assert _decider().is_shared_host(host) is expected
