"""The committed bootstrap is the generator output, Envoy accepts it, it keeps the contract."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from extproc.cli import main
from extproc.core.xds_contract import FAST_CLUSTER, ORIGINAL_DST_HEADER, ROUTE_CONFIG, RUNTIME_LAYER
from extproc.envoy_config.bootstrap import render_yaml
from extproc.envoy_config.settings import EnvoySettings, HostPort, UnixSocket, parse_endpoint
from support.gateway import assert_envoy_accepts

COMMITTED = Path(__file__).parents[2] / "envoy" / "envoy.yaml"


def _hcm(document: dict[str, Any]) -> dict[str, Any]:
    listener = document["static_resources"]["listeners"][0]
    config: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return config


def test_committed_yaml_is_the_generator_output() -> None:
    assert COMMITTED.read_text() == render_yaml(EnvoySettings()), (
        "envoy/envoy.yaml is stale: run `agentcube-e2b envoy-config -o envoy/envoy.yaml`"
    )


def test_envoy_validates_the_committed_yaml() -> None:
    assert_envoy_accepts(COMMITTED)


def test_cli_writes_the_settings_it_was_given(tmp_path: Path) -> None:
    out = tmp_path / "envoy.yaml"
    code = main(
        [
            "envoy-config",
            "--listen",
            "0.0.0.0:10000",
            "--domain",
            "Sbx.Example.com",
            "--edge",
            "127.0.0.1:9001",
            "--edge",
            "127.0.0.1:9003",
            "-o",
            str(out),
        ]
    )
    assert code == 0
    expected = EnvoySettings(
        listen=HostPort("0.0.0.0", 10000),
        domain="sbx.example.com",
        edges=(HostPort("127.0.0.1", 9001), HostPort("127.0.0.1", 9003)),
    )
    assert out.read_text() == render_yaml(expected)


@pytest.mark.parametrize(
    "argv",
    [
        ["--admin", "0.0.0.0:9901"],
        ["--listen", "localhost:80"],
        ["--edge", "nope"],
        ["--domain", "*.x"],
    ],
)
def test_cli_rejects_bad_settings(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["envoy-config", *argv]) == 2
    assert "agentcube-e2b envoy-config:" in capsys.readouterr().err


def test_filter_order_and_contract_points() -> None:
    hcm = _hcm(yaml.safe_load(COMMITTED.read_text()))
    filters = hcm["http_filters"]
    assert [f["name"].rsplit(".", 1)[1] for f in filters] == [
        "header_mutation",
        "ext_authz",
        "ext_proc",
        "router",
    ]
    removed = [m["remove"] for m in filters[0]["typed_config"]["mutations"]["request_mutations"]]
    assert removed == ["x-envoy-original-dst-host", "x-agentcube-e2b-user", "x-agentcube-tenant"]
    authz = filters[1]["typed_config"]
    assert "with_request_body" not in authz
    assert authz.get("failure_mode_allow", False) is False
    assert authz["status_on_error"]["code"] == "ServiceUnavailable"
    assert [p["exact"] for p in authz["allowed_headers"]["patterns"]] == [
        "x-api-key",
        "authorization",
        "x-access-token",
        "e2b-sandbox-id",
        "e2b-sandbox-port",
        "e2b-traffic-access-token",
        "accept",
        "user-agent",
        "x-request-id",
    ]
    extproc = filters[2]["typed_config"]
    assert extproc["metadata_options"]["forwarding_namespaces"]["untyped"] == [
        "envoy.filters.http.ext_authz"
    ]
    mode = extproc["processing_mode"]
    assert (
        mode["request_header_mode"],
        mode["response_header_mode"],
        mode["request_body_mode"],
    ) == ("SEND", "SKIP", "BUFFERED")


def test_every_sandbox_route_streams_and_skips_ext_proc() -> None:
    hcm = _hcm(yaml.safe_load(COMMITTED.read_text()))
    routes = [r for vh in hcm["route_config"]["virtual_hosts"] for r in vh["routes"]]
    sandbox = [r for r in routes if "route" in r]
    platform = [r for r in routes if "direct_response" in r]
    assert len(sandbox) == 4 and len(platform) == 2  # + the signed-URL route
    for route in sandbox:
        assert route["route"]["timeout"] == "0s"
        per_filter = route["typed_per_filter_config"]
        assert per_filter["envoy.filters.http.ext_proc"]["disabled"] is True
        assert per_filter["envoy.filters.http.ext_authz"]["check_settings"] == {
            "context_extensions": {"surface": "sandbox"}
        }
    for route in platform:
        assert route["direct_response"]["status"] == 500
        per_filter = route["typed_per_filter_config"]
        assert "envoy.filters.http.ext_proc" not in per_filter
        assert per_filter["envoy.filters.http.ext_authz"]["check_settings"] == {
            "context_extensions": {"surface": "platform"}
        }


def test_connection_manager_normalises_paths() -> None:
    hcm = _hcm(yaml.safe_load(COMMITTED.read_text()))
    assert hcm["normalize_path"] is True
    assert hcm["merge_slashes"] is True
    assert hcm["path_with_escaped_slashes_action"] == "UNESCAPE_AND_FORWARD"


def _up_like(tmp_path: Path, netns: Path | None) -> EnvoySettings:
    return EnvoySettings(
        admin=UnixSocket(tmp_path / "run" / "envoy-admin.sock"),
        edges=(UnixSocket(tmp_path / "run" / "edge-1.sock"), HostPort("127.0.0.1", 9003)),
        sandbox_netns=netns,
    )


def test_admin_and_edges_may_be_pipes_and_the_sandbox_cluster_a_netns(tmp_path: Path) -> None:
    netns = Path("/run/netns/e2b0123abcd-hub")
    document = yaml.safe_load(render_yaml(_up_like(tmp_path, netns)))
    admin = document["admin"]["address"]
    assert admin == {"pipe": {"path": str(tmp_path / "run" / "envoy-admin.sock"), "mode": 0o600}}
    edge, sandbox = document["static_resources"]["clusters"]
    endpoints = edge["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert [e["endpoint"]["address"] for e in endpoints] == [
        {"pipe": {"path": str(tmp_path / "run" / "edge-1.sock")}},
        {"socket_address": {"address": "127.0.0.1", "port_value": 9003}},
    ]
    assert "upstream_bind_config" not in edge
    assert sandbox["upstream_bind_config"] == {
        "source_address": {
            "address": "0.0.0.0",
            "port_value": 0,
            "network_namespace_filepath": str(netns),
        }
    }
    no_netns = yaml.safe_load(render_yaml(_up_like(tmp_path, None)))
    assert "upstream_bind_config" not in no_netns["static_resources"]["clusters"][1]


def test_envoy_validates_an_up_like_bootstrap(tmp_path: Path) -> None:
    config = tmp_path / "envoy.yaml"
    config.write_text(render_yaml(_up_like(tmp_path, Path("/run/netns/e2b0123abcd-hub"))))
    assert_envoy_accepts(config)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"admin": HostPort("0.0.0.0", 9901)}, "admin must listen on a loopback IP"),
        ({"sandbox_netns": Path("netns/hub")}, "sandbox_netns must be an absolute path"),
    ],
)
def test_settings_refuse(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EnvoySettings(**changes)


@pytest.mark.parametrize(
    ("text", "message"),
    [("unix:relative.sock", "expected unix:/ABSOLUTE/PATH"), ("unix:/" + "a" * 120, "bytes")],
)
def test_unix_socket_addresses_are_absolute_and_short_enough(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_endpoint(text)
    assert parse_endpoint("unix:/run/x.sock") == UnixSocket(Path("/run/x.sock"))
    assert parse_endpoint("127.0.0.1:1") == HostPort("127.0.0.1", 1)


def test_the_fast_path_bootstrap_takes_routes_from_the_edges(tmp_path: Path) -> None:
    fast = replace(_up_like(tmp_path, Path("/run/netns/e2b0123abcd-hub")), fast_path=True)
    document = yaml.safe_load(render_yaml(fast))
    hcm = _hcm(document)
    assert "route_config" not in hcm
    from_edges = {"ads": {}, "resource_api_version": "V3", "initial_fetch_timeout": "0s"}
    assert hcm["rds"] == {"route_config_name": ROUTE_CONFIG, "config_source": from_edges}
    ads = document["dynamic_resources"]["ads_config"]
    assert ads["grpc_services"][0]["envoy_grpc"]["cluster_name"] == "edge"
    (runtime, admin) = document["layered_runtime"]["layers"]
    assert runtime["rtds_layer"] == {"name": RUNTIME_LAYER, "rtds_config": from_edges}
    assert "admin_layer" in admin
    # the client can never choose the fast cluster's host: the first filter drops the header
    assert hcm["http_filters"][0]["name"] == "envoy.filters.http.header_mutation"
    mutations = hcm["http_filters"][0]["typed_config"]["mutations"]["request_mutations"]
    assert {"remove": ORIGINAL_DST_HEADER} in mutations
    clusters = {cluster["name"]: cluster for cluster in document["static_resources"]["clusters"]}
    fast_cluster, checked = clusters[FAST_CLUSTER], clusters["sandbox"]
    assert fast_cluster["original_dst_lb_config"] == {
        "use_http_header": True,
        "http_header_name": ORIGINAL_DST_HEADER,
    }
    # otherwise the very cluster the checked routes use
    for cluster in (fast_cluster, checked):
        del cluster["name"], cluster["original_dst_lb_config"]
    assert fast_cluster == checked
    # and nothing changes without the fast path
    assert "dynamic_resources" not in yaml.safe_load(render_yaml(_up_like(tmp_path, None)))
    config = tmp_path / "fast.yaml"
    config.write_text(render_yaml(fast))
    assert_envoy_accepts(config)
