"""E2B-Traffic-Access-Token (network.allowPublicTraffic: false), decision function only.

E2B's client-proxy requires the token on every port but envd's 49983 and answers a missing
or wrong one with 403 JSON; envd's port keeps its own X-Access-Token rule.
"""

from __future__ import annotations

import json

import pytest

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc.core.tokens import traffic_access_token
from extproc.edge.decision import Allow, Deny, Miss, SandboxDecider
from extproc.edge.sandbox_directory import Directory, Route, route_from_proto
from support.routes import running_route

DOMAIN = "e2b.test"
ENVD_TOKEN = "tok-private"
TRAFFIC = traffic_access_token(ENVD_TOKEN, "sbxprivate")


def _route(sandbox_id: str, public: bool, traffic: str = "") -> Route:
    return running_route(
        sandbox_id, ENVD_TOKEN, public_traffic=public, traffic_access_token=traffic
    )


@pytest.fixture
def decider() -> SandboxDecider:
    directory = Directory()
    directory.put(_route("sbxprivate", public=False, traffic=TRAFFIC))
    directory.put(_route("sbxpublic", public=True))
    directory.put(_route("sbxnotoken", public=False, traffic=""))
    return SandboxDecider(directory, DOMAIN)


def _decide(
    decider: SandboxDecider, sandbox_id: str, port: int, headers: dict[str, str]
) -> Allow | Deny:
    decision = decider.decide(f"{port}-{sandbox_id}.{DOMAIN}", headers, "GET", "/")
    assert isinstance(decision, Allow | Deny)
    return decision


def _assert_denied(decision: Allow | Deny | Miss, missing: bool) -> None:
    assert isinstance(decision, Deny)
    assert decision.status == 403
    body = json.loads(decision.body)
    word = "missing" if missing else "invalid"
    assert body == {
        "sandboxId": "sbxprivate",
        "message": "Sandbox is secured with traffic access token. "
        f"Token header 'e2b-traffic-access-token' is {word}",
        "code": 403,
    }


@pytest.mark.parametrize("port", [8080, 49999, 1])
def test_user_ports_need_the_token(decider: SandboxDecider, port: int) -> None:
    _assert_denied(_decide(decider, "sbxprivate", port, {}), missing=True)
    _assert_denied(_decide(decider, "sbxprivate", port, {"e2b-traffic-access-token": ""}), True)
    wrong = {"e2b-traffic-access-token": TRAFFIC[:-1] + ("1" if TRAFFIC[-1] == "0" else "0")}
    _assert_denied(_decide(decider, "sbxprivate", port, wrong), missing=False)
    # The envd token is not the traffic token.
    envd = {"e2b-traffic-access-token": ENVD_TOKEN}
    _assert_denied(_decide(decider, "sbxprivate", port, envd), missing=False)
    allowed = _decide(decider, "sbxprivate", port, {"e2b-traffic-access-token": TRAFFIC})
    assert isinstance(allowed, Allow)
    assert allowed.upstream_host == f"127.0.0.42:{port}"


def test_header_routing_needs_it_too(decider: SandboxDecider) -> None:
    headers = {"e2b-sandbox-id": "sbxprivate", "e2b-sandbox-port": "49999"}
    decision = decider.decide(f"sandbox.{DOMAIN}", headers, "POST", "/execute")
    _assert_denied(decision, missing=True)
    headers["e2b-traffic-access-token"] = TRAFFIC
    assert isinstance(decider.decide(f"sandbox.{DOMAIN}", headers, "POST", "/execute"), Allow)


def test_envd_port_keeps_its_own_rule(decider: SandboxDecider) -> None:
    allowed = _decide(decider, "sbxprivate", 49983, {"x-access-token": ENVD_TOKEN})
    assert isinstance(allowed, Allow)
    denied = _decide(decider, "sbxprivate", 49983, {"e2b-traffic-access-token": TRAFFIC})
    assert isinstance(denied, Deny) and denied.status == 401


def test_public_sandboxes_are_unaffected(decider: SandboxDecider) -> None:
    assert isinstance(_decide(decider, "sbxpublic", 8080, {}), Allow)
    assert isinstance(_decide(decider, "sbxpublic", 8080, {"e2b-traffic-access-token": "x"}), Allow)


def test_a_private_sandbox_without_a_minted_token_admits_nothing(
    decider: SandboxDecider,
) -> None:
    decision = _decide(decider, "sbxnotoken", 8080, {"e2b-traffic-access-token": ""})
    assert isinstance(decision, Deny) and decision.status == 403
    decision = _decide(decider, "sbxnotoken", 8080, {"e2b-traffic-access-token": "anything"})
    assert isinstance(decision, Deny) and decision.status == 403


def test_route_from_proto_reads_the_flag() -> None:
    legacy = pb.Sandbox(sandbox_id="sbxold", envd_access_token="t", secure=True)
    assert route_from_proto(legacy).public_traffic is True
    private = pb.Sandbox(
        sandbox_id="sbxnew", envd_access_token="t", secure=True,
        allow_public_traffic=False, traffic_access_token="tt",
    )  # fmt: skip
    route = route_from_proto(private)
    assert route.public_traffic is False and route.traffic_access_token == "tt"


def test_the_token_is_stable_distinct_and_keyed() -> None:
    assert traffic_access_token(ENVD_TOKEN, "sbxprivate") == TRAFFIC
    assert len(TRAFFIC) == 64 and TRAFFIC != ENVD_TOKEN
    assert traffic_access_token(ENVD_TOKEN, "sbxother") != TRAFFIC
    assert traffic_access_token("tok-other", "sbxprivate") != TRAFFIC
    assert traffic_access_token("", "sbxprivate") == ""
