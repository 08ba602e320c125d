"""The fast path's guards mirror the Check's rules (table tests against decision.py and
core/hosts.py), and the assembled bytes are the RouteConfiguration they stand for."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
import yaml
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from google.protobuf import json_format

from extproc.core.errors import InvalidArgument
from extproc.core.hosts import parse_target
from extproc.core.xds_contract import FAST_CLUSTER, GATE_KEY_PREFIX
from extproc.edge.decision import INTERNAL_ENVD_PATHS, _basic_user, normalized_path
from extproc.edge.xds_routes import (
    FAST_USERS,
    FastRoute,
    FastRoutes,
    fast_authorization_regex,
    shared_host_regex,
    unsafe_path_regex,
    user_expression,
)
from extproc.envoy_config.bootstrap import render_yaml
from extproc.envoy_config.routes import route_configuration
from extproc.envoy_config.settings import EnvoySettings
from support.gateway import assert_envoy_accepts

DOMAIN = "e2b.test"

PATHS = [
    "/",
    "/health",
    "/init",
    "/init?x=1",
    "/init/",
    "/initx",
    "/x/init",
    "/freeze",
    "/fsthaw",
    "/%69nit",
    "/a%2Finit",
    "//init",
    "/./init",
    "/a/../init",
    "/a/..",
    "/init#x",
    "/init\\",
    "/files?path=%2Fetc%2Fpasswd",
    "/files?path=/a/../b",
    "/process.Process/Start",
    "/a/.b",
    "/a.b/c",
    "/.well-known",
    "/x?y=/init",
]


@pytest.mark.parametrize("path", PATHS)
def test_a_path_left_to_the_fast_path_is_one_the_check_would_not_hide(path: str) -> None:
    unsafe = re.fullmatch(unsafe_path_regex(), path) is not None
    path_only = path.partition("?")[0]
    if not unsafe:
        # exactly what the Check compares with its internal paths
        assert normalized_path(path_only) == path_only
        assert path_only not in INTERNAL_ENVD_PATHS
    if normalized_path(path_only) in INTERNAL_ENVD_PATHS:
        assert unsafe


AUTHORIZATIONS = [
    *FAST_USERS,
    "Basic " + base64.b64encode(b"alice:").decode(),
    "basic " + base64.b64encode(b"root:").decode(),
    "Basic  " + base64.b64encode(b"root:").decode(),
    "Basic " + base64.b64encode(b"root:").decode() + ",Basic x",
    "Bearer x",
    "",
]


@pytest.mark.parametrize("value", AUTHORIZATIONS)
def test_the_users_the_fast_path_sets_are_the_ones_the_check_would(value: str) -> None:
    if re.fullmatch(fast_authorization_regex(), value):
        assert _basic_user(value) == FAST_USERS[value]
    else:
        assert value not in FAST_USERS
    assert _basic_user(None) == ""  # absent: no user, as the fast path sets none


def test_the_user_expression_names_each_fast_user() -> None:
    expression = user_expression()
    for value, user in FAST_USERS.items():
        assert f"== '{value}' ? '{user}'" in expression


HOSTS = [
    "localhost",
    "LOCALHOST",
    f"sandbox.{DOMAIN}",
    f"sandboxx{DOMAIN[1:]}",
    "127.0.0.1",
    "10.1.2.3",
    "255.255.255.255",
    "256.1.1.1",
    "127.0.0.01",
    "1.2.3",
    "[::1]",
    "foo.example",
    f"49983-sbx.{DOMAIN}",
]


@pytest.mark.parametrize("host", HOSTS)
def test_a_host_the_fast_path_header_routes_is_one_the_check_header_routes(host: str) -> None:
    if re.fullmatch(shared_host_regex(DOMAIN), host) is None:
        return
    target = parse_target(host, "sbxid", "49983", f"sandbox.{DOMAIN}")
    assert (target.sandbox_id, target.port) == ("sbxid", 49983)
    with pytest.raises(InvalidArgument):  # header-routed indeed: one header is not enough
        parse_target(host, "sbxid", None, f"sandbox.{DOMAIN}")


def _static() -> bytes:
    return bytes(route_configuration(EnvoySettings(domain=DOMAIN, fast_path=True)))


def test_the_assembled_bytes_are_the_configuration_with_every_sandbox() -> None:
    routes = FastRoutes(_static(), DOMAIN)
    leaves = [
        routes.leaf("sbxa", FastRoute("10.0.0.1:49983", "tok-a"), "jwt-a"),
        routes.leaf("sbxb", FastRoute("10.0.0.2:49983", ""), "jwt-b"),
    ]
    config = route_pb2.RouteConfiguration.FromString(routes.assemble(leaves))
    hosts = {vhost.name: vhost for vhost in config.virtual_hosts}
    assert set(hosts) == {"platform", "shared", "sandbox"}
    assert config.most_specific_header_mutations_wins
    by_id = hosts["shared"].matcher.on_no_match.matcher.matcher_tree
    assert by_id.input.name == "e2b-sandbox-id"
    assert set(by_id.exact_match_map.map) == {"", "sbxa", "sbxb"}
    ports = by_id.exact_match_map.map["sbxa"].matcher.matcher_tree.exact_match_map.map
    tokens = ports["49983"].matcher.matcher_tree
    assert tokens.input.name == "x-access-token"
    listed = rc.RouteList()
    tokens.exact_match_map.map["tok-a"].action.typed_config.Unpack(listed)
    fast, fallback = listed.routes
    assert fast.name == "sbxa" and fast.route.cluster == FAST_CLUSTER
    assert fast.match.runtime_fraction.runtime_key == GATE_KEY_PREFIX + "sbxa"
    added = {h.header.key: h.header.value for h in fast.request_headers_to_add}
    assert added == {"x-envoy-original-dst-host": "10.0.0.1:49983", "authorization": "Bearer jwt-a"}
    assert set(fast.request_headers_to_remove) == {"x-api-key", "e2b-traffic-access-token"}
    assert fallback.name == "sandbox-by-e2b-sandbox-id"
    assert fast.route.idle_timeout == fallback.route.idle_timeout
    # no token checked: the port leads to the routes at once
    assert (
        by_id.exact_match_map.map["sbxb"]
        .matcher.matcher_tree.exact_match_map.map["49983"]
        .HasField("action")
    )
    by_host = hosts["sandbox"].matcher.on_no_match.matcher.matcher_tree
    assert by_host.input.name == ":authority"
    assert set(by_host.exact_match_map.map) == {"", f"49983-sbxa.{DOMAIN}", f"49983-sbxb.{DOMAIN}"}


def test_without_sandboxes_the_static_routes_answer_everything() -> None:
    routes = FastRoutes(_static(), DOMAIN)
    config = route_pb2.RouteConfiguration.FromString(routes.assemble([]))
    static = {
        vhost.name: vhost
        for vhost in route_pb2.RouteConfiguration.FromString(_static()).virtual_hosts
    }
    assert {vhost.name for vhost in config.virtual_hosts} == set(static)
    for vhost in config.virtual_hosts:
        before = static[vhost.name]
        if not vhost.HasField("matcher"):
            assert vhost == before
            continue
        listed = rc.RouteList()
        vhost.matcher.on_no_match.matcher.on_no_match.action.typed_config.Unpack(listed)
        assert list(listed.routes) == list(before.routes)
        for guard in vhost.matcher.matcher_list.matchers:
            guarded = rc.RouteList()
            guard.on_match.action.typed_config.Unpack(guarded)
            assert list(guarded.routes) == list(before.routes)


def test_static_routes_without_the_sandbox_hosts_are_refused() -> None:
    config = route_pb2.RouteConfiguration.FromString(_static())
    del config.virtual_hosts[:]
    with pytest.raises(ValueError, match="no virtual host 'shared'"):
        FastRoutes(config.SerializeToString(), DOMAIN)


@pytest.mark.parametrize("count", [0, 2])
def test_envoy_accepts_the_assembled_configuration(tmp_path: Path, count: int) -> None:
    """Envoy validates what it is sent (PGV rules included): put it in a bootstrap."""
    settings = EnvoySettings(domain=DOMAIN, fast_path=True)
    routes = FastRoutes(_static(), DOMAIN)
    leaves = [
        routes.leaf(f"sbx{index}", FastRoute(f"10.0.0.{index}:49983", "tok" * index), "j.w.t")
        for index in range(count)
    ]
    config = route_pb2.RouteConfiguration.FromString(routes.assemble(leaves))
    document = yaml.safe_load(render_yaml(settings))
    hcm = document["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    del hcm["typed_config"]["rds"]
    hcm["typed_config"]["route_config"] = json_format.MessageToDict(config)
    del document["dynamic_resources"], document["layered_runtime"]
    path = tmp_path / "envoy.json"
    path.write_text(json.dumps(document))
    assert_envoy_accepts(path)
