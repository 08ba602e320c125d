"""The fast path never allows what the Check denies: the same requests, both ways.

Two gateways over the same sandboxes, one whose Envoy serves known running sandboxes alone
(fast path) and one that checks every request. Each request of the set goes through both, over
HTTP/1.1 and h2, header- and host-routed; the answers must be the same, and an allowed request
must reach the same sandbox with the same identity (the JWT's sandbox, the user, no API key
or traffic token). Then: the fast gateway really does not ask the edge for such requests, and
a kill, a pause and an expiry cut access as promptly as the Check would.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
import pytest
import pytest_asyncio

from edge.fake_lifecycle import make_sandbox
from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc.core import signed_urls
from extproc.core.identity import load_or_create_router_identity

from .harness import API_KEY, DOMAIN, Gateway, address, echo_servers, running_gateway

pytestmark = pytest.mark.asyncio(loop_scope="module")

TOKEN = {name: f"token-{name}-{'x' * 40}" for name in ("sbxa", "sbxb", "sbxkill", "sbxpause")}
# sandbox id -> (address index, what else)
SANDBOXES = {
    "sbxa": 1,  # running, checks X-Access-Token
    "sbxb": 2,  # running, another token
    "sbxopen": 3,  # running, checks no token (secure off)
    "sbxpaused": 4,  # paused, its server still answering: only the Check may say no
    "sbxended": 5,  # its end is past, its server still answering
    "sbxclosed": 6,  # running, nothing listening on its address
    "sbxkill": 7,
    "sbxpause": 8,
    "sbxending": 9,  # created by a test, ends a few seconds later
}
LISTENING = {address(index): name for name, index in SANDBOXES.items() if name != "sbxclosed"}
BASIC = {user: "Basic " + base64.b64encode(f"{user}:".encode()).decode() for user in
         ("user", "root", "alice")}  # fmt: skip


def sandboxes() -> list[pb.Sandbox]:
    now = int(time.time())
    made = []
    for name, index in SANDBOXES.items():
        if name == "sbxending":
            continue
        fields: dict[str, Any] = {"endpoint_host": address(index)}
        if name in TOKEN:
            fields["envd_access_token"] = TOKEN[name]
        if name == "sbxopen":
            fields.update(secure=False, envd_access_token="")
        if name == "sbxpaused":
            fields["state"] = pb.SANDBOX_STATE_PAUSED
        sandbox = make_sandbox(name, "default", **fields)
        if name == "sbxended":
            sandbox.end_at.seconds = now - 5
        made.append(sandbox)
    return made


@dataclass
class Pair:
    fast: Gateway
    checked: Gateway
    public_pem: bytes
    clients: dict[tuple[bool, str], httpx.AsyncClient] = field(default_factory=dict)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def pair(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Pair]:
    directory = tmp_path_factory.mktemp("fp")
    identity = directory / "identity"
    public_pem = load_or_create_router_identity(identity).public_pem
    async with (
        echo_servers(LISTENING),
        running_gateway(directory, identity, sandboxes(), fast=True) as fast,
        running_gateway(directory, identity, sandboxes(), fast=False) as checked,
    ):
        pair = Pair(fast, checked, public_pem)
        for gateway in (fast, checked):
            for protocol in ("h1", "h2"):
                h2 = protocol == "h2"
                pair.clients[(gateway.fast, protocol)] = httpx.AsyncClient(
                    base_url=gateway.url, http1=not h2, http2=h2, timeout=10
                )
        await _until(lambda: fast.edge.xds is not None and fast.edge.xds.serving("sbxa"))
        try:
            yield pair
        finally:
            for client in pair.clients.values():
                await client.aclose()


async def _until(condition: Any, timeout_s: float = 10.0) -> float:
    """Poll `condition()` (state in this process, changed by its event loop): seconds taken."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.002)
    return time.monotonic() - started


@dataclass(frozen=True)
class Case:
    name: str
    sandbox: str
    headers: tuple[tuple[str, str], ...] = ()
    path: str = "/envd/ping"
    method: str = "GET"
    port: str = "49983"
    routing: str = "header"  # or "host"
    host: str = ""  # header routing: the Host (default: the listener's address)


def _request(case: Case) -> tuple[str, str, list[tuple[str, str]]]:
    headers = list(case.headers)
    if case.routing == "header":
        if case.host:
            headers.append(("host", case.host))
        if case.sandbox:
            headers.append(("e2b-sandbox-id", case.sandbox))
        if case.port:
            headers.append(("e2b-sandbox-port", case.port))
    else:
        headers.append(("host", f"{case.port}-{case.sandbox}.{DOMAIN}"))
    return case.method, case.path, headers


def _token(name: str) -> tuple[tuple[str, str], ...]:
    return (("x-access-token", TOKEN[name]),)


def _signed_download(sandbox: str) -> str:
    signature = signed_urls.sign("/home/user/x", "read", "user", TOKEN[sandbox], None)
    query = urlencode({"path": "/home/user/x", "username": "user", "signature": signature})
    return f"/files?{query}"


def cases() -> list[Case]:
    a = _token("sbxa")
    made = []
    for routing in ("header", "host"):
        for case in (
            Case("token", "sbxa", a),
            Case("token user", "sbxa", (*a, ("authorization", BASIC["user"]))),
            Case("token root", "sbxa", (*a, ("authorization", BASIC["root"]))),
            Case("token other user", "sbxa", (*a, ("authorization", BASIC["alice"]))),
            Case("lowercase basic", "sbxa", (*a, ("authorization", "basic cm9vdDo="))),
            Case("bearer", "sbxa", (*a, ("authorization", "Bearer whatever"))),
            Case("bad basic", "sbxa", (*a, ("authorization", "Basic !!!"))),
            Case(
                "two users",
                "sbxa",
                (*a, ("authorization", BASIC["user"]), ("authorization", BASIC["root"])),
            ),
            Case("wrong token", "sbxa", (("x-access-token", "nope"),)),
            Case("no token", "sbxa"),
            Case("other sandbox's token", "sbxa", _token("sbxb")),
            Case("token twice", "sbxa", (*a, *a)),
            Case("token and another", "sbxa", (*_token("sbxb"), *a)),
            Case("health without token", "sbxa", path="/health"),
            Case("signed url", "sbxa", path=_signed_download("sbxa")),
            Case("signed url, other token", "sbxa", path=_signed_download("sbxb")),
            Case("/init", "sbxa", a, path="/init"),
            Case("/init?x", "sbxa", a, path="/init?x=1"),
            Case("/%69nit", "sbxa", a, path="/%69nit"),
            Case("//init", "sbxa", a, path="//init"),
            Case("/./init", "sbxa", a, path="/./init"),
            Case("/a/../init", "sbxa", a, path="/a/../init"),
            Case("/init/", "sbxa", a, path="/init/"),
            Case("/freeze", "sbxa", a, path="/freeze", method="POST"),
            Case("%2F in the query", "sbxa", a, path="/files?path=%2Fetc%2Fhostname"),
            Case("%2F in the path", "sbxa", a, path="/a%2Finit"),
            Case("POST", "sbxa", a, path="/process.Process/List", method="POST"),
            Case("spoofed upstream", "sbxa", (*a, ("x-envoy-original-dst-host", address(2)))),
            Case("spoofed user", "sbxa", (*a, ("x-agentcube-e2b-user", "root"))),
            Case(
                "api key and traffic token",
                "sbxa",
                (*a, ("x-api-key", API_KEY), ("e2b-traffic-access-token", "t")),
            ),
            Case("user port", "sbxa", a, port="49999"),
            Case("unknown sandbox", "sbxnothere", a),
            Case("paused", "sbxpaused"),
            Case("ended", "sbxended"),
            Case("closed port", "sbxclosed", (("x-access-token", "tok-sbxclosed"),)),
            Case("no token needed", "sbxopen"),
            Case("no token needed, one sent", "sbxopen", (("x-access-token", "any"),)),
        ):
            made.append(Case(**{**case.__dict__, "routing": routing}))
    for host in ("LOCALHOST", "localhost", f"sandbox.{DOMAIN}", "foo.example", "[::1]",
                 "999.1.1.1", "127.0.0.01"):  # fmt: skip
        made.append(Case(f"host {host}", "sbxa", a, host=host))
    made.append(Case("id header only", "sbxa", a, port=""))
    made.append(Case("port header only", "", a))
    made.append(Case("id twice", "sbxa", (*a, ("e2b-sandbox-id", "sbxa"))))
    return made


def _identity(answer: dict[str, Any], public_pem: bytes) -> dict[str, Any]:
    """What the sandbox saw that matters: who it is, who the JWT is for, the user."""
    headers: dict[str, list[str]] = {}
    for key, value in answer["headers"]:
        headers.setdefault(key, []).append(value)
    (authorization,) = headers["authorization"]
    claims = jwt.decode(
        authorization.removeprefix("Bearer "), public_pem, algorithms=["RS256"]
    )  # verifies the signature and `exp`
    return {
        "sandbox": answer["sandbox"],
        "path": answer["path"],
        "jwt": (claims["iss"], claims["session_id"]),
        "user": headers.get("x-agentcube-e2b-user"),
        "access_token": headers.get("x-access-token"),
        "api_key": headers.get("x-api-key"),
        "traffic_token": headers.get("e2b-traffic-access-token"),
        "tenant": headers.get("x-agentcube-tenant"),
    }


async def _send(pair: Pair, fast: bool, protocol: str, case: Case) -> tuple[int, Any]:
    method, path, headers = _request(case)
    client = pair.clients[(fast, protocol)]
    # httpx would normalise the path: send it as written
    url = httpx.URL(client.base_url.copy_with(raw_path=path.encode()))
    reply = await client.request(method, url, headers=headers)
    if reply.status_code == 200 and reply.headers.get("content-type") == "application/json":
        return 200, _identity(reply.json(), pair.public_pem)
    try:
        return reply.status_code, reply.json()
    except json.JSONDecodeError:
        return reply.status_code, reply.text


@pytest.mark.parametrize("protocol", ["h1", "h2"])
async def test_the_fast_path_answers_as_the_check(pair: Pair, protocol: str) -> None:
    differences = []
    answers = {}
    for case in cases():
        fast = await _send(pair, True, protocol, case)
        checked = await _send(pair, False, protocol, case)
        answers[(case.routing, case.name)] = checked
        if fast != checked:
            differences.append((case, fast, checked))
    assert not differences, "\n".join(
        f"{c}\n  fast: {f}\n  checked: {k}" for c, f, k in differences
    )
    # and the set is not vacuous: the Check allowed and denied what it should
    for routing in ("header", "host"):
        allowed = answers[(routing, "token user")]
        assert allowed[0] == 200 and allowed[1]["user"] == ["user"], allowed
        assert allowed[1]["jwt"] == ("agentcube-router", "sbxa")
        assert answers[(routing, "token")][1]["user"] is None
        assert answers[(routing, "token root")][1]["user"] == ["root"]
        assert answers[(routing, "token other user")][1]["user"] == ["alice"]
        assert answers[(routing, "lowercase basic")][1]["user"] == ["root"]
        assert answers[(routing, "spoofed user")][1]["user"] is None
        assert answers[(routing, "spoofed upstream")][1]["sandbox"] == "sbxa"
        assert answers[(routing, "api key and traffic token")][1]["api_key"] is None
        for denied in ("wrong token", "no token", "other sandbox's token", "token twice"):
            assert answers[(routing, denied)][0] == 401, (routing, denied)
        for hidden in ("/init", "/%69nit", "//init", "/./init", "/a/../init", "/freeze"):
            assert answers[(routing, hidden)][0] == 404, (routing, hidden)
        for gone in ("unknown sandbox", "paused", "ended"):
            assert answers[(routing, gone)][0] == 502, (routing, gone)
        assert answers[(routing, "closed port")][1]["message"].endswith("port is not open")
        assert answers[(routing, "signed url")][0] == 200


FAST_REQUESTS = [
    Case("token", "sbxa", _token("sbxa")),
    Case("user", "sbxa", (*_token("sbxa"), ("authorization", BASIC["user"]))),
    Case("root", "sbxa", (*_token("sbxa"), ("authorization", BASIC["root"]))),
    Case("no token needed", "sbxopen"),
]


async def test_requests_the_fast_path_knows_never_reach_the_edge(pair: Pair) -> None:
    counters = ("http.e2b.ext_authz.ok", "http.e2b.ext_authz.denied", "http.e2b.ext_authz.error")
    requests = [
        Case(**{**case.__dict__, "routing": routing})
        for case in FAST_REQUESTS
        for routing in ("header", "host")
    ]
    for gateway in (pair.fast, pair.checked):
        before = await gateway.stats(*counters)
        for protocol in ("h1", "h2"):
            for case in requests:
                status, _ = await _send(pair, gateway.fast, protocol, case)
                assert status == 200, case
        after = await gateway.stats(*counters)
        checks = {name: after[name] - before[name] for name in counters}
        expected = 0 if gateway.fast else 2 * len(requests)
        assert checks == {counters[0]: expected, counters[1]: 0, counters[2]: 0}, gateway.fast
    # Envoy's access log names the fast route (the sandbox) a request took
    lines = [json.loads(line) for line in pair.fast.access_log.read_text().splitlines()]
    assert any(line.get("route") == "sbxa" for line in lines)


async def test_a_kill_turns_the_fast_route_off_before_the_next_request(pair: Pair) -> None:
    kill = Case("token", "sbxkill", _token("sbxkill"))
    assert (await _send(pair, True, "h1", kill))[0] == 200
    fast = pair.fast
    assert fast.edge.xds is not None and fast.edge.xds.serving("sbxkill")
    sandbox = fast.lifecycle.sandboxes["sbxkill"]
    await fast.publish(pb.SANDBOX_EVENT_TYPE_KILLED, sandbox)
    await _until(lambda: fast.edge.directory.get("sbxkill") is None)
    # what a kill through the platform API waits for before answering
    assert await fast.edge.xds.landed("sbxkill", 2.0)
    for protocol in ("h1", "h2"):
        for routing in ("header", "host"):
            status, body = await _send(
                pair, True, protocol, Case(**{**kill.__dict__, "routing": routing})
            )
            assert (status, body["message"]) == (502, "The sandbox was not found")
    # and once routes without it land, its gate goes too
    await _until(lambda: "sbxkill" not in fast.edge.xds.gated)


async def test_a_pause_answered_by_the_platform_api_has_cut_the_fast_path(pair: Pair) -> None:
    paused = Case("token", "sbxpause", _token("sbxpause"))
    await _until(lambda: pair.fast.edge.xds is not None and pair.fast.edge.xds.serving("sbxpause"))
    assert (await _send(pair, True, "h2", paused))[0] == 200
    client = pair.clients[(True, "h1")]
    reply = await client.post("/sandboxes/sbxpause/pause", headers={"x-api-key": API_KEY})
    assert reply.status_code == 204, reply.text
    # the very next request, on another connection and protocol
    status, body = await _send(pair, True, "h2", paused)
    assert (status, body["message"]) == (502, "The sandbox was not found")


async def test_an_ending_sandbox_leaves_the_fast_path_before_its_end(pair: Pair) -> None:
    fast = pair.fast
    assert fast.edge.xds is not None
    end_at = time.time() + 2.5
    sandbox = make_sandbox("sbxending", "default", endpoint_host=address(9))
    sandbox.end_at.seconds = int(end_at)
    sandbox.end_at.nanos = int(end_at % 1 * 1e9)
    await fast.publish(pb.SANDBOX_EVENT_TYPE_CREATED, sandbox)
    await _until(lambda: fast.edge.xds is not None and fast.edge.xds.serving("sbxending"))
    ending = Case("token", "sbxending", (("x-access-token", "tok-sbxending"),))
    served_fast = 0
    while time.time() < end_at + 0.5:
        started = time.time()
        was_fast = fast.edge.xds.serving("sbxending")
        status, _ = await _send(pair, True, "h1", ending)
        if started >= end_at:
            assert status == 502, started - end_at
        elif status == 200 and was_fast:
            served_fast += 1
        await asyncio.sleep(0.02)
    assert served_fast > 0
    assert not fast.edge.xds.serving("sbxending")
