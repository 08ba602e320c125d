"""The gateway as pieces to merge into an Envoy a platform team already runs.

`agentcube-e2b envoy-config --fragment` prints what `bootstrap.py` builds, minus what belongs
to the team (listener, admin, node, overload manager, access log, router), reshaped so that it
changes nothing for the team's own traffic:

- The three filters are `disabled` in the chain and enabled only by the gateway's virtual
  hosts (an empty per-route config of each at virtual-host level), so the team's routes never
  reach ext_authz or ext_proc and keep every header.
- Clusters and virtual hosts get an `agentcube-e2b-` prefix: `edge`, `sandbox`, `platform`
  are names a team may well use already.
- The catch-all `*` domain is dropped: the team has its own. Header routing (the SDK with
  `E2B_SANDBOX_URL`) stays on `sandbox.<domain>`.
- Envoy's local replies in E2B's JSON shape are limited to requests for `<domain>` and its
  subdomains, so the team's own 502/503 bodies stay as they are.

The connection manager settings cannot be a fragment of filters: they are fields of the
team's HCM and apply to all of its traffic. They are emitted as their own section, each with
why the gateway needs it (`HCM_SETTINGS`); docs/envoy.md says how to merge all four sections.
"""

from __future__ import annotations

import copy
import re
import textwrap
from dataclasses import dataclass

import yaml  # type: ignore[import-untyped]  # PyYAML ships no stubs; only safe_dump is used
from betterproto2 import Casing, Message
from envoy_data_plane.envoy.config.accesslog.v3 import AccessLogFilter, AndFilter
from envoy_data_plane.envoy.config.cluster.v3 import Cluster
from envoy_data_plane.envoy.config.route.v3 import RouteConfiguration, VirtualHost
from envoy_data_plane.envoy.extensions.filters.http.ext_authz.v3 import (
    CheckSettings,
    ExtAuthz,
    ExtAuthzPerRoute,
)
from envoy_data_plane.envoy.extensions.filters.http.ext_proc.v3 import (
    ExternalProcessor,
    ExtProcOverrides,
    ExtProcPerRoute,
)
from envoy_data_plane.envoy.extensions.filters.http.header_mutation.v3 import (
    HeaderMutationPerRoute,
)
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
    HttpConnectionManager,
    HttpFilter,
    LocalReplyConfig,
    ResponseMapper,
)
from envoy_data_plane.google.protobuf import Any

from extproc.envoy_config import clusters
from extproc.envoy_config.bootstrap import _integral, bootstrap, connection_manager
from extproc.envoy_config.filters import EXT_AUTHZ, EXT_PROC, HEADER_MUTATION, ROUTER
from extproc.envoy_config.replies import _when, local_reply_config
from extproc.envoy_config.settings import EnvoySettings

NAME_PREFIX = "agentcube-e2b-"
EDGE_CLUSTER = NAME_PREFIX + clusters.EDGE_CLUSTER
SANDBOX_CLUSTER = NAME_PREFIX + clusters.SANDBOX_CLUSTER
CATCH_ALL = "*"

REQUIRED, RECOMMENDED = "REQUIRED", "RECOMMENDED"
# The fields of the team's HCM the gateway relies on: (REQUIRED or RECOMMENDED, why). The
# values are bootstrap.py's.
HCM_SETTINGS = {
    "normalize_path": (
        RECOMMENDED,
        "one spelling of each path for the edge, the access log and the sandbox. Not a "
        "security boundary: the edge normalises the path itself before its deny-list "
        "(edge/decision.py), so /%69nit or /a/../init cannot slip past a check for /init.",
    ),
    "merge_slashes": (RECOMMENDED, "for the same reason: //init reaches everyone as /init."),
    "path_with_escaped_slashes_action": (
        RECOMMENDED,
        "UNESCAPE_AND_FORWARD is what the gateway is tested with (a template name sent with "
        "%2F stays one name); REJECT_REQUEST turns every %2F into a 400.",
    ),
    "strip_any_host_port": (
        REQUIRED,
        "when clients reach Envoy on a non-default port: the virtual hosts match api.<domain> "
        "and *.<domain> without a port.",
    ),
    "upgrade_configs": (
        REQUIRED,
        "for websockets to servers in sandboxes (any port may serve one); CONNECT carries "
        "RFC 8441 websockets over h2.",
    ),
    "http2_protocol_options": (
        RECOMMENDED,
        "allow_connect for websockets over h2, and room for many streams per connection (the "
        "SDK multiplexes command streams).",
    ),
    "stream_idle_timeout": (
        REQUIRED,
        "60 s or more (300 s here): a create waits up to 60 s on the platform routes, and the "
        "SDK pings idle streams every 50 s. Keep request_timeout and max_stream_duration "
        "unset too: a command stream lasts as long as its command.",
    ),
    "request_headers_timeout": (RECOMMENDED, "bounds slow-header clients."),
    "local_reply_config": (
        REQUIRED,
        "Envoy's own errors on E2B hosts in E2B's JSON shape, which the SDKs parse. Each mapper "
        "matches only <domain> and its subdomains: put them before yours (the first match "
        "wins).",
    ),
}

YAML_HEADER = """\
# agentcube-e2b: the pieces to merge into an Envoy you already run (docs/envoy.md).
# Generated by `agentcube-e2b envoy-config --fragment`; regenerate rather than edit.
#
# http_filters: into your HTTP connection manager's http_filters, in this order, after your own
#   filters and before your router, which stays last. header_mutation must run before
#   ext_authz (it strips headers only the gateway may set), and no filter after ext_authz may
#   clear the route cache. They are disabled by default: only the virtual hosts below enable
#   them, so your routes never reach the gateway's edge.
# clusters: into static_resources.clusters (or your CDS). The edge's gRPC trusts its caller:
#   only this Envoy may reach it (docs/envoy.md, "The edge's gRPC port").
# virtual_hosts: into that HCM's route configuration (or its RDS resource). Your own `*`
#   catch-all stays yours; the SDK's header routing uses sandbox.<domain>.
# http_connection_manager_settings: fields of that same HCM; each says why it is needed.
"""


@dataclass(frozen=True)
class Fragment:
    """The four sections of `--fragment`, as typed config."""

    http_filters: list[HttpFilter]
    clusters: list[Cluster]
    virtual_hosts: list[VirtualHost]
    connection_manager_settings: HttpConnectionManager


def _off_by_default(filter_: HttpFilter) -> HttpFilter:
    """`filter_` disabled unless a virtual host enables it, calling the renamed edge cluster."""
    config = filter_.typed_config.unpack() if filter_.typed_config is not None else None
    if isinstance(config, ExtAuthz | ExternalProcessor) and config.grpc_service is not None:
        edge = config.grpc_service.envoy_grpc
        if edge is not None:
            edge.cluster_name = _renamed(edge.cluster_name)
    typed_config = Any.pack(config) if config is not None else None
    return HttpFilter(name=filter_.name, typed_config=typed_config, disabled=True)


def _renamed(cluster: str) -> str:
    return NAME_PREFIX + cluster


def _clusters(settings: EnvoySettings) -> list[Cluster]:
    """Every cluster of the whole bootstrap, renamed."""
    resources = bootstrap(settings).static_resources
    built = list(resources.clusters) if resources is not None else []
    for cluster in built:
        cluster.name = _renamed(cluster.name)
        if cluster.load_assignment is not None:
            cluster.load_assignment.cluster_name = cluster.name
    return built


def _virtual_hosts(route_config: RouteConfiguration | None) -> list[VirtualHost]:
    # Any valid per-route config turns on a filter that is `disabled` in the chain; these three
    # change nothing else (the routes' own ext_authz and ext_proc configs are more specific).
    enabled = {
        HEADER_MUTATION: Any.pack(HeaderMutationPerRoute()),
        EXT_AUTHZ: Any.pack(ExtAuthzPerRoute(check_settings=CheckSettings())),
        EXT_PROC: Any.pack(ExtProcPerRoute(overrides=ExtProcOverrides())),
    }
    hosts = []
    for host in route_config.virtual_hosts if route_config is not None else []:
        host.name = NAME_PREFIX + host.name
        host.domains = [domain for domain in host.domains if domain != CATCH_ALL]
        host.typed_per_filter_config = dict(enabled)
        # routes.py may put one Route object in several hosts: rename copies, once each
        host.routes = [copy.deepcopy(route) for route in host.routes]
        for route in host.routes:
            if route.route is not None and route.route.cluster is not None:
                route.route.cluster = _renamed(route.route.cluster)
        hosts.append(host)
    return hosts


def on_domain(domain: str) -> str:
    """A CEL condition: the request is for `domain` or one of its subdomains (any port)."""
    pattern = rf"(?i)^([^:]+\.)?{re.escape(domain)}(:[0-9]+)?$"
    return f"request.host.matches(r'{pattern}')"


def _scoped_local_replies(domain: str) -> LocalReplyConfig:
    """replies.py's mappers, each matching only requests for `domain`, then one that matches
    the rest of `domain`'s replies and changes nothing.

    Envoy applies the first mapper that matches. Without the last one, a reply the edge wrote
    itself (a denial such as the 502 for a missing sandbox, JSON the SDK parses) would fall
    through to the team's own mappers, which commonly rewrite every 5xx into their error page.
    """
    config = local_reply_config()
    for mapper in config.mappers:
        conditions = [_when(on_domain(domain))]
        if mapper.filter is not None:
            conditions.append(mapper.filter)
        mapper.filter = AccessLogFilter(and_filter=AndFilter(filters=conditions))
    config.mappers.append(ResponseMapper(filter=_when(on_domain(domain))))
    return config


def fragment(settings: EnvoySettings) -> Fragment:
    """The whole bootstrap's connection manager and clusters, less what is the team's."""
    full = connection_manager(settings)
    hcm_settings = HttpConnectionManager(
        **{name: getattr(full, name) for name in HCM_SETTINGS if name != "local_reply_config"},
        local_reply_config=_scoped_local_replies(settings.domain),
    )
    return Fragment(
        http_filters=[_off_by_default(f) for f in full.http_filters if f.name != ROUTER],
        clusters=_clusters(settings),
        virtual_hosts=_virtual_hosts(full.route_config),
        connection_manager_settings=hcm_settings,
    )


def _dump(document: object) -> str:
    text: str = yaml.safe_dump(_integral(document), sort_keys=False, width=100)
    return text


def _as_dict(message: Message) -> dict[str, object]:
    document: dict[str, object] = message.to_dict(casing=Casing.SNAKE)
    return document


def render_fragment_yaml(settings: EnvoySettings) -> str:
    pieces = fragment(settings)
    sections = [
        _dump({"http_filters": [_as_dict(f) for f in pieces.http_filters]}),
        _dump({"clusters": [_as_dict(c) for c in pieces.clusters]}),
        _dump({"virtual_hosts": [_as_dict(v) for v in pieces.virtual_hosts]}),
        "http_connection_manager_settings:\n",
    ]
    hcm = _as_dict(pieces.connection_manager_settings)
    for name, (need, why) in HCM_SETTINGS.items():
        comment = textwrap.indent(textwrap.fill(f"{need}: {why}", width=94), "  # ")
        entry = _dump({name: hcm[name]})
        sections.append(comment + "\n" + "".join(f"  {line}\n" for line in entry.splitlines()))
    return YAML_HEADER + "".join(sections)
