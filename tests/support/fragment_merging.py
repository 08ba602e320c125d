"""Merge `envoy-config --fragment` into a team's bootstrap, step by step as docs/envoy.md says.

This is the recipe a platform team follows by hand (or with their own templating); writing it
as code lets the test prove the recipe, not just the fragment.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from extproc.envoy_config.fragment import render_fragment_yaml
from extproc.envoy_config.settings import Endpoint, EnvoySettings

TEAM_BOOTSTRAP = Path(__file__).parents[1] / "envoy" / "platform_team" / "bootstrap.yaml"
TEAM_LISTENER = "ingress_http"
HCM = "envoy.filters.network.http_connection_manager"
ROUTER = "envoy.filters.http.router"
FILTER_CONFIG = "type.googleapis.com/envoy.config.route.v3.FilterConfig"
# the team's filter that has no business with E2B traffic, off on the gateway's hosts
TEAM_FILTERS_OFF = ("envoy.filters.http.local_ratelimit",)


def connection_manager(bootstrap: dict[str, Any], listener: str) -> dict[str, Any]:
    """The typed config of the HTTP connection manager on `listener`'s first filter chain."""
    for candidate in bootstrap["static_resources"]["listeners"]:
        if candidate["name"] == listener:
            for network_filter in candidate["filter_chains"][0]["filters"]:
                if network_filter["name"] == HCM:
                    config: dict[str, Any] = network_filter["typed_config"]
                    return config
    raise KeyError(f"no HTTP connection manager on listener {listener!r}")


def merge(
    bootstrap: dict[str, Any],
    fragment: dict[str, Any],
    listener: str,
    team_filters_off: Sequence[str] = (),
) -> dict[str, Any]:
    """`bootstrap` with `fragment` merged into `listener`'s connection manager; the team's
    filters named in `team_filters_off` are turned off on the gateway's virtual hosts."""
    merged = copy.deepcopy(bootstrap)
    hcm = connection_manager(merged, listener)
    # 1. the gateway's filters after the team's own, before the router (which stays last)
    filters = hcm["http_filters"]
    router = next(index for index, item in enumerate(filters) if item["name"] == ROUTER)
    filters[router:router] = fragment["http_filters"]
    # 2. the clusters
    merged["static_resources"]["clusters"].extend(fragment["clusters"])
    # 3. the virtual hosts, next to the team's (Envoy picks the most specific domain)
    for host in fragment["virtual_hosts"]:
        for name in team_filters_off:
            host["typed_per_filter_config"][name] = {"@type": FILTER_CONFIG, "disabled": True}
    hcm["route_config"]["virtual_hosts"].extend(fragment["virtual_hosts"])
    # 4. the connection manager fields; the gateway's local-reply mappers go first, since the
    #    first mapper that matches wins and the gateway's match only its own domain
    for name, value in fragment["http_connection_manager_settings"].items():
        if name == "local_reply_config" and "local_reply_config" in hcm:
            theirs = hcm["local_reply_config"]
            theirs["mappers"] = value["mappers"] + theirs.get("mappers", [])
        else:
            hcm[name] = value
    return merged


def merged_bootstrap(
    edge: Endpoint,
    *,
    domain: str,
    listen: int,
    admin: Path,
    shop_web: int,
    shop_api: int,
    sandbox_netns: Path | None = None,
) -> dict[str, Any]:
    """The team's bootstrap on the given ports, with the fragment for `edge` and `domain`
    merged in (its sandbox connections opened in `sandbox_netns` when given)."""
    team = yaml.safe_load(TEAM_BOOTSTRAP.read_text())
    team["admin"]["address"] = {"pipe": {"path": str(admin), "mode": 0o600}}
    team["static_resources"]["listeners"][0]["address"]["socket_address"] = {
        "address": "127.0.0.1",
        "port_value": listen,
    }
    team_clusters = team["static_resources"]["clusters"]
    for cluster, port in zip(team_clusters, (shop_web, shop_api), strict=True):
        address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        address["address"]["socket_address"]["port_value"] = port
    fragment = yaml.safe_load(
        render_fragment_yaml(
            EnvoySettings(domain=domain, edges=(edge,), sandbox_netns=sandbox_netns)
        )
    )
    return merge(team, fragment, TEAM_LISTENER, TEAM_FILTERS_OFF)
