"""A CodeInterpreter's `ports` in Kubernetes mode: the edge lets E2B traffic reach those
ports (and envd's) only, answering any other port as E2B's proxy answers a closed one."""

from __future__ import annotations

import json

import pytest

from extproc.edge.decision import Allow, Deny, SandboxDecider
from extproc.edge.sandbox_directory import Directory
from extproc.k8s.directory import parse_ports
from support.routes import running_route

DOMAIN = "e2b.test"
TOKEN = "t" * 32
SANDBOX = "sbxports"


@pytest.mark.parametrize(
    ("text", "ports"),
    [
        (None, None),  # not listed: every port
        ("49983", frozenset({49983})),
        ("8080,49999", frozenset({8080, 49999, 49983})),  # envd's is always open
        ("8080,,", frozenset({8080, 49983})),
        ("80x", frozenset({49983})),  # unreadable: closed but for envd
    ],
)
def test_parse_ports(text: str | None, ports: frozenset[int] | None) -> None:
    assert parse_ports(text) == ports


def _decider(open_ports: frozenset[int] | None) -> SandboxDecider:
    directory = Directory()
    directory.put(running_route(SANDBOX, TOKEN, open_ports=open_ports))
    return SandboxDecider(directory, DOMAIN)


def test_only_listed_ports_are_reachable() -> None:
    decider = _decider(frozenset({49983, 8080}))
    headers = {"x-access-token": TOKEN}
    assert isinstance(decider.decide(f"8080-{SANDBOX}.{DOMAIN}", {}, "GET", "/"), Allow)
    assert isinstance(decider.decide(f"49983-{SANDBOX}.{DOMAIN}", headers, "GET", "/envs"), Allow)
    closed = decider.decide(f"3000-{SANDBOX}.{DOMAIN}", headers, "GET", "/")
    assert isinstance(closed, Deny) and closed.status == 502
    assert json.loads(closed.body) == {
        "sandboxId": SANDBOX,
        "message": "The sandbox is running but port is not open",
        "port": 3000,
        "code": 502,
    }


def test_without_a_list_every_port_is_reachable() -> None:
    decider = _decider(None)
    assert isinstance(decider.decide(f"3000-{SANDBOX}.{DOMAIN}", {}, "GET", "/"), Allow)
