"""`envoy-config --fragment`: its shape, the CLI, and Envoy's verdict on it merged."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from envoy_standins import DOMAIN

from extproc.cli import main
from extproc.envoy_config.bootstrap import connection_manager as gateway_connection_manager
from extproc.envoy_config.fragment import (
    EDGE_CLUSTER,
    HCM_SETTINGS,
    SANDBOX_CLUSTER,
    on_domain,
    render_fragment_yaml,
)
from extproc.envoy_config.settings import EnvoySettings, HostPort
from support.fragment_merging import TEAM_LISTENER, connection_manager, merged_bootstrap
from support.gateway import assert_envoy_accepts

COMMITTED = Path(__file__).parents[2] / "envoy" / "fragment.yaml"
COMMITTED_SETTINGS = EnvoySettings(domain="e2b.example.com")
SETTINGS = EnvoySettings(
    domain="e2b.example.com", edges=(HostPort("10.0.0.7", 9001), HostPort("10.0.0.8", 9001))
)


@pytest.fixture(scope="module")
def fragment() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(render_fragment_yaml(SETTINGS))
    return document


def test_four_sections(fragment: dict[str, Any]) -> None:
    assert list(fragment) == [
        "http_filters",
        "clusters",
        "virtual_hosts",
        "http_connection_manager_settings",
    ]


def test_filters_are_off_unless_a_gateway_virtual_host_enables_them(
    fragment: dict[str, Any],
) -> None:
    names = [item["name"] for item in fragment["http_filters"]]
    assert names == [
        "envoy.filters.http.header_mutation",
        "envoy.filters.http.ext_authz",
        "envoy.filters.http.ext_proc",
    ]
    assert all(item["disabled"] for item in fragment["http_filters"])
    per_route_types = {
        "envoy.filters.http.header_mutation": "header_mutation.v3.HeaderMutationPerRoute",
        "envoy.filters.http.ext_authz": "ext_authz.v3.ExtAuthzPerRoute",
        "envoy.filters.http.ext_proc": "ext_proc.v3.ExtProcPerRoute",
    }
    for host in fragment["virtual_hosts"]:
        enabled = host["typed_per_filter_config"]
        types = {name: config["@type"].rsplit("http.", 1)[1] for name, config in enabled.items()}
        assert types == per_route_types
        # enabling only: no per-host setting that a route would inherit
        assert enabled["envoy.filters.http.ext_authz"]["check_settings"] == {}
        assert enabled["envoy.filters.http.ext_proc"]["overrides"] == {}


def test_names_cannot_collide_with_the_team_and_every_reference_resolves(
    fragment: dict[str, Any],
) -> None:
    clusters = {cluster["name"] for cluster in fragment["clusters"]}
    assert {EDGE_CLUSTER, SANDBOX_CLUSTER} <= clusters
    assert all(name.startswith("agentcube-e2b-") for name in clusters)
    assert all(host["name"].startswith("agentcube-e2b-") for host in fragment["virtual_hosts"])
    for item in fragment["http_filters"][1:]:
        assert item["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"] == EDGE_CLUSTER
    routed = {
        route["route"]["cluster"]
        for host in fragment["virtual_hosts"]
        for route in host["routes"]
        if "route" in route
    }
    assert SANDBOX_CLUSTER in routed
    assert routed <= clusters
    edge = next(cluster for cluster in fragment["clusters"] if cluster["name"] == EDGE_CLUSTER)
    assert edge["load_assignment"]["cluster_name"] == EDGE_CLUSTER
    endpoints = edge["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert [e["endpoint"]["address"]["socket_address"]["address"] for e in endpoints] == [
        "10.0.0.7",
        "10.0.0.8",
    ]


def test_no_catch_all_domain(fragment: dict[str, Any]) -> None:
    domains = [domain for host in fragment["virtual_hosts"] for domain in host["domains"]]
    assert domains == ["api.e2b.example.com", "*.e2b.example.com", "sandbox.e2b.example.com"]


def test_connection_manager_settings_are_the_gateway_own(fragment: dict[str, Any]) -> None:
    settings = fragment["http_connection_manager_settings"]
    assert list(settings) == list(HCM_SETTINGS)
    gateway = gateway_connection_manager(SETTINGS)
    assert settings["normalize_path"] is gateway.normalize_path is True
    assert settings["merge_slashes"] is True
    assert settings["path_with_escaped_slashes_action"] == "UNESCAPE_AND_FORWARD"
    assert settings["strip_any_host_port"] is True
    assert [item["upgrade_type"] for item in settings["upgrade_configs"]] == [
        "websocket",
        "CONNECT",
    ]
    mappers = settings["local_reply_config"]["mappers"]
    # the gateway's own mappers, then one that keeps every other reply on its domain as the
    # gateway wrote it (out of the team's mappers)
    *own, keep = mappers
    assert len(own) == len(gateway.local_reply_config.mappers)
    for mapper in own:
        scope = mapper["filter"]["and_filter"]["filters"][0]
        assert scope["extension_filter"]["typed_config"]["expression"] == on_domain(
            "e2b.example.com"
        )
    assert keep == {
        "filter": {
            "extension_filter": {
                "name": "envoy.access_loggers.extension_filters.cel",
                "typed_config": {
                    "@type": "type.googleapis.com/"
                    "envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
                    "expression": on_domain("e2b.example.com"),
                },
            }
        }
    }


def test_every_connection_manager_setting_says_why() -> None:
    text = render_fragment_yaml(SETTINGS)
    for name, (need, _) in HCM_SETTINGS.items():
        assert re.search(rf"  # {need}: [^\n]*\n(  #[^\n]*\n)*  {name}:", text), name


@pytest.mark.parametrize(
    ("host", "is_e2b"),
    [
        ("api.e2b.example.com", True),
        ("49983-abc123.e2b.example.com", True),
        ("49983-ABC123.E2B.Example.COM:8443", True),
        ("sandbox.e2b.example.com:443", True),
        ("e2b.example.com", True),
        ("shop.example.com", False),
        ("e2b.example.com.evil.org", False),
        ("notmye2b.example.com", False),
        ("e2bxexample.com", False),
        ("api.e2b.example.com:80:80", False),
    ],
)
def test_local_replies_match_only_the_gateway_domain(host: str, is_e2b: bool) -> None:
    # Envoy evaluates the pattern with RE2; this one uses only syntax RE2 and `re` share.
    # The live test (test_fragment_merge) runs it through Envoy's CEL.
    pattern = re.fullmatch(r"request\.host\.matches\(r'(.*)'\)", on_domain("e2b.example.com"))
    assert pattern is not None
    assert bool(re.search(pattern.group(1), host)) is is_e2b


def test_cli_prints_the_fragment(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["envoy-config", "--fragment", "--domain", "E2B.example.com"]
    argv += ["--edge", "10.0.0.7:9001", "--edge", "10.0.0.8:9001"]
    assert main(argv) == 0
    assert capsys.readouterr().out == render_fragment_yaml(SETTINGS)


def test_cli_rejects_a_bad_edge(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["envoy-config", "--fragment", "--edge", "edge.svc:9001"]) == 2
    assert "expected an IP literal" in capsys.readouterr().err


def test_envoy_validates_the_team_bootstrap_with_the_fragment_merged(tmp_path: Path) -> None:
    document = merged_bootstrap(
        HostPort("10.0.0.7", 9001),
        domain=DOMAIN,
        listen=10000,
        admin=tmp_path / "admin.sock",
        shop_web=8080,
        shop_api=8090,
    )
    config = tmp_path / "envoy.yaml"
    config.write_text(yaml.safe_dump(document, sort_keys=False))
    assert_envoy_accepts(config)


def test_the_merge_keeps_the_team_pieces_and_the_router_last() -> None:
    document = merged_bootstrap(
        HostPort("10.0.0.7", 9001),
        domain=DOMAIN,
        listen=1,
        admin=Path("/a"),
        shop_web=2,
        shop_api=3,
    )
    hcm = connection_manager(document, TEAM_LISTENER)
    assert [item["name"] for item in hcm["http_filters"]] == [
        "envoy.filters.http.cors",
        "envoy.filters.http.local_ratelimit",
        "envoy.filters.http.header_mutation",
        "envoy.filters.http.ext_authz",
        "envoy.filters.http.ext_proc",
        "envoy.filters.http.router",
    ]
    assert [host["name"] for host in hcm["route_config"]["virtual_hosts"]][:2] == [
        "shop",
        "default",
    ]
    clusters = [cluster["name"] for cluster in document["static_resources"]["clusters"]]
    assert clusters[:2] == ["shop_web", "shop_api"]
    # the gateway's replies first: each matches only its domain, the team's match any 5xx
    mappers = hcm["local_reply_config"]["mappers"]
    assert "and_filter" in mappers[0]["filter"]
    assert "status_code_filter" in mappers[-1]["filter"]


def test_committed_example_is_the_generator_output() -> None:
    assert COMMITTED.read_text() == render_fragment_yaml(COMMITTED_SETTINGS), (
        "envoy/fragment.yaml is stale: run `agentcube-e2b envoy-config --fragment "
        "--domain e2b.example.com --edge 127.0.0.1:9001 -o envoy/fragment.yaml`"
    )
