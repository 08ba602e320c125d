"""envd's internal routes are refused however the path is spelt (decision function only).

Envoy may or may not normalise the path before ext_authz sees it; the edge's own check
must hold either way. What matters is what a server would route: picod runs under uvicorn,
which percent-decodes the whole path (httptools drops the query and fragment) and then
routes exact, case-sensitive paths; an Envoy with `normalize_path` and `merge_slashes`
also merges slashes and removes dot segments.
"""

from __future__ import annotations

from urllib.parse import unquote

import httptools
import pytest

from extproc.edge.decision import (
    INTERNAL_ENVD_PATHS,
    INTERNAL_PATH,
    Allow,
    Deny,
    Miss,
    SandboxDecider,
    normalized_path,
)
from extproc.edge.sandbox_directory import Directory
from support.routes import running_route

DOMAIN = "e2b.test"
TOKEN = "tok-internal"
ENVD = f"49983-sbxinternal.{DOMAIN}"

REFUSED = [
    "/init",
    "/init?x=1",
    "/init#fragment",
    "/%69nit",
    "/%69%6E%69%74",
    "/%69%6e%69%74?a=b",
    "//init",
    "///init",
    "/./init",
    "/%2e/init",
    "/%2E%2E/init",
    "/a/../init",
    "/../init",
    "/files/../init",
    "/%2Finit",
    "/%2F/init",
    "/\\init",
    "/%5Cinit",
    "/.//./init",
    "/freeze",
    "//unfreeze",
    "/%63ollapse",
    "/./fsfreeze",
    "/x/../fsthaw?y",
]
# picod answers 404 to each of these (exact, case-sensitive routes), and no Envoy
# normalisation turns them into /init, so they are not the edge's to refuse.
NOT_INTERNAL = ["/init/", "/INIT", "/Init", "/%2569nit", "/init%3Fx", "/initx", "/init;x", "/in/it"]
ORDINARY = [
    "/files?path=%2Fhome%2Fuser",
    "/files?path=%2Fhome%2Fuser%2F..%2F..%2Finit",
    "/files?path=/init",
    "/process.Process/Start",
    "/process.Process/StreamInput",
    "/filesystem.Filesystem/ListDir",
    "/envs",
    "/metrics",
    "/health",
]


@pytest.fixture
def decider() -> SandboxDecider:
    directory = Directory()
    directory.put(running_route("sbxinternal", TOKEN))
    return SandboxDecider(directory, DOMAIN)


def _decide(
    decider: SandboxDecider, path: str, host: str = ENVD, token: bool = True
) -> Allow | Deny | Miss:
    headers = {"x-access-token": TOKEN} if token else {}
    return decider.decide(host, headers, "POST", path)


@pytest.mark.parametrize("path", REFUSED)
def test_internal_paths_are_refused_however_spelt(decider: SandboxDecider, path: str) -> None:
    # With the sandbox's own token: only the control plane may call these.
    assert _decide(decider, path) is INTERNAL_PATH
    assert _decide(decider, path, token=False) is INTERNAL_PATH


@pytest.mark.parametrize("path", REFUSED)
def test_the_same_paths_on_user_ports_are_the_users_business(
    decider: SandboxDecider, path: str
) -> None:
    assert isinstance(_decide(decider, path, host=f"8000-sbxinternal.{DOMAIN}"), Allow)


@pytest.mark.parametrize("path", NOT_INTERNAL + ORDINARY)
def test_other_paths_are_unchanged(decider: SandboxDecider, path: str) -> None:
    decision = _decide(decider, path)
    assert isinstance(decision, Allow), decision
    assert decision.upstream_host == "127.0.0.42:49983"


@pytest.mark.parametrize("path", REFUSED + NOT_INTERNAL + ORDINARY)
def test_whatever_picod_would_route_as_internal_is_refused(
    decider: SandboxDecider, path: str
) -> None:
    # uvicorn's own parsing: httptools splits the target, then the path is unquoted.
    routed = unquote(httptools.parse_url(path.encode()).path.decode("ascii"))
    if routed in INTERNAL_ENVD_PATHS:
        assert _decide(decider, path) is INTERNAL_PATH


@pytest.mark.parametrize(
    "path", ["/%68ealth", "/./health", "//health", "/%66iles?path=a", "//files?path=a"]
)
def test_open_routes_match_only_their_plain_spelling(decider: SandboxDecider, path: str) -> None:
    # Without a token, only the plain `/health` and `/files` get their exceptions: an odd
    # spelling of an open route is refused, never an odd spelling of a closed one let in.
    decision = decider.decide(ENVD, {}, "GET", path)
    assert isinstance(decision, Deny) and decision.status == 401, decision


@pytest.mark.parametrize(
    ("path", "normal"),
    [
        ("/init", "/init"),
        ("/files?path=%2F..%2Finit", "/files"),
        ("/%69nit", "/init"),
        ("//a///b", "/a/b"),
        ("/a/./b/../c", "/a/c"),
        ("/a/b/..", "/a/"),
        ("/a/b/.", "/a/b/"),
        ("/..", "/"),
        ("/../..", "/"),
        ("/%2e%2E", "/"),
        ("/a%2Fb", "/a/b"),
        ("/a\\b", "/a/b"),
        ("/init/", "/init/"),
        ("/%ff", "/\ufffd"),
        ("/process.Process/Start", "/process.Process/Start"),
        ("/a/.b/..c", "/a/.b/..c"),
    ],
)
def test_normalized_path(path: str, normal: str) -> None:
    assert normalized_path(path) == normal
