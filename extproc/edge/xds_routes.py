"""The RouteConfiguration the edge serves Envoy: the static routes plus a fast route per
running sandbox, taken only by a request the Check would allow with a known answer.

The static routes (extproc/envoy_config/routes.py, written by `up` as a file) stay, each
behind ext_authz. The two sandbox virtual hosts swap their route list for a matcher:

- `shared` (header routing, how `up` is used): guards, then an exact map on
  `e2b-sandbox-id` -> `e2b-sandbox-port` "49983" -> `x-access-token` (when the sandbox
  checks one) -> the sandbox's routes;
- `sandbox` (`{port}-{id}.<domain>`): guards, then an exact map on `:authority`
  "49983-<id>.<domain>" -> `x-access-token` -> the sandbox's routes.

Lookups are hash maps, so a request costs the same at 10 000 sandboxes as at one. A request
a guard catches, or whose key is in no map, gets the virtual host's static routes: Envoy
falls back from a nested matcher that does not match to the enclosing `on_no_match`
(checked on Envoy 1.40). Matcher inputs see a header's values joined with "," as the Check
does, which is why token and user are matched there and not by route header matchers (those
match any single value of a repeated header). The guards mirror decision.py:

- the path (before `?`) holds `%`, `\\`, `#`, `//` or `/.` (so it may normalise to something
  else), or is an internal envd path;
- `authorization` is neither absent nor the SDK's `Basic` for `user` or `root` (the only
  values mapped to `x-agentcube-e2b-user` here, by a CEL expression on the whole
  configuration, evaluated before a route's own headers replace `authorization`);
- header routing only: the host is not `localhost`, `sandbox.<domain>` or an IPv4 literal.

A sandbox's routes are a RouteList: its fast route, then the static ext_authz route. The fast
route turns ext_authz and ext_proc off, sets exactly what the Check's Allow sets (the picod
JWT as `authorization`, the user; `x-api-key` and `e2b-traffic-access-token` removed) and
`x-envoy-original-dst-host` for the `sandbox_fast` cluster, and matches only while runtime
key `agentcube_e2b.fast_path.<id>` is not 0 (fast_path.py switches a route off that way
before the RouteConfiguration without it lands).

The result is assembled as bytes: protobuf merges a message field that occurs twice and adds
map entries, so a virtual host is its skeleton followed by one small serialized virtual host
per sandbox holding only that sandbox's map entry. Each sandbox's piece is built once (again
when its JWT is re-signed), and a push at 10 000 sandboxes is a join of cached bytes.
"""

from __future__ import annotations

import base64
import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.http.ext_proc.v3 import ext_proc_pb2
from envoy.type.matcher.v3 import http_inputs_pb2
from google.protobuf import any_pb2  # type: ignore[import-untyped]  # no stubs shipped
from xds.type.matcher.v3 import matcher_pb2

from extproc.core.hosts import ENVD_PORT
from extproc.core.xds_contract import (
    EXT_AUTHZ_FILTER,
    EXT_PROC_FILTER,
    FAST_CLUSTER,
    GATE_KEY_PREFIX,
    HEADER_FALLBACK_ROUTE,
    HOST_FALLBACK_ROUTE,
    ORIGINAL_DST_HEADER,
    SANDBOX_VHOST,
    SHARED_VHOST,
)
from extproc.edge.decision import INTERNAL_ENVD_PATHS

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
# `Authorization` values the fast path serves, and the user the Check maps each to: the SDK
# sends none by default and `Basic base64("<user>:")` when a call names a user.
FAST_USERS = {"Basic " + base64.b64encode(f"{user}:".encode()).decode(): user
              for user in ("user", "root")}  # fmt: skip
# What the Check strips from an allowed sandbox request (authz.py).
_REMOVED_HEADERS = ("x-api-key", "e2b-traffic-access-token")
_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
_VHOSTS_FIELD = route_pb2.RouteConfiguration.DESCRIPTOR.fields_by_name["virtual_hosts"].number
_ROUTES_FIELD = rc.RouteList.DESCRIPTOR.fields_by_name["routes"].number
_ROUTE_LIST_TYPE = "type.googleapis.com/" + rc.RouteList.DESCRIPTOR.full_name


def unsafe_path_regex() -> str:
    """Paths (`:path`, query included) the fast path leaves to the Check: one that may
    normalise differently (decision.normalized_path) or an internal envd path."""
    internal = "|".join(re.escape(path) for path in sorted(INTERNAL_ENVD_PATHS))
    return rf"[^?]*(?:%|\\|#|//|/\.).*|(?:{internal})(?:\?.*)?"


def fast_authorization_regex() -> str:
    return "|".join(re.escape(value) for value in sorted(FAST_USERS))


def shared_host_regex(domain: str) -> str:
    """Hosts the Check header-routes on that the fast path serves (IPv6 literals: the Check)."""
    return rf"localhost|{re.escape(f'sandbox.{domain}')}|{_IPV4}"


def user_expression() -> str:
    """CEL: the user for `authorization`, "" (no header) for anything else."""
    expression = "''"
    for value, user in sorted(FAST_USERS.items()):
        expression = f"(request.headers['authorization'] == '{value}' ? '{user}' : {expression})"
    return f"%CEL({expression})%"


@dataclass(frozen=True, slots=True)
class FastRoute:
    """What a sandbox's fast route depends on, besides its JWT."""

    upstream_host: str  # "<ip>:49983"
    access_token: str  # the envd token a request must carry; "" when none is checked


@dataclass(frozen=True, slots=True)
class Leaf:
    """One sandbox's map entries, serialized as virtual-host pieces (see the docstring)."""

    header: bytes
    host: bytes


@functools.cache
def _header_input(name: str) -> any_pb2.Any:
    """A matcher input on request header `name` (never mutated: only copied from)."""
    packed = any_pb2.Any()
    packed.Pack(http_inputs_pb2.HttpRequestHeaderMatchInput(header_name=name))
    return packed


def _tree(matcher: matcher_pb2.Matcher, header: str) -> matcher_pb2.Matcher.MatcherTree:
    tree = matcher.matcher_tree
    tree.input.name = header
    tree.input.typed_config.CopyFrom(_header_input(header))
    return tree


def _regex(predicate: matcher_pb2.Matcher.MatcherList.Predicate, header: str, regex: str) -> None:
    single = predicate.single_predicate
    single.input.name = header
    single.input.typed_config.CopyFrom(_header_input(header))
    single.value_match.safe_regex.google_re2.SetInParent()
    single.value_match.safe_regex.regex = regex


def _routes(on_match: matcher_pb2.Matcher.OnMatch, routes: Iterable[rc.Route]) -> None:
    listed = rc.RouteList()
    listed.routes.extend(routes)
    on_match.action.name = "routes"
    on_match.action.typed_config.Pack(listed)


def _find(items: Iterable[rc.VirtualHost] | Iterable[rc.Route], name: str, what: str) -> int:
    for index, item in enumerate(items):
        if item.name == name:
            return index
    raise ValueError(f"the static routes have no {what} {name!r}")


class FastRoutes:
    """Builds the RouteConfiguration from the static one (serialized) and sandbox leaves."""

    def __init__(self, static_routes: bytes, domain: str) -> None:
        config = route_pb2.RouteConfiguration.FromString(static_routes)
        shared_index = _find(config.virtual_hosts, SHARED_VHOST, "virtual host")
        host_index = _find(config.virtual_hosts, SANDBOX_VHOST, "virtual host")
        shared = rc.VirtualHost()
        shared.CopyFrom(config.virtual_hosts[shared_index])
        by_host = rc.VirtualHost()
        by_host.CopyFrom(config.virtual_hosts[host_index])
        self._domain = domain
        self._header_fallback = shared.routes[_find(shared.routes, HEADER_FALLBACK_ROUTE, "route")]
        self._host_fallback = by_host.routes[_find(by_host.routes, HOST_FALLBACK_ROUTE, "route")]
        self._authz_off = any_pb2.Any()
        self._authz_off.Pack(ext_authz_pb2.ExtAuthzPerRoute(disabled=True))
        self._proc_off = any_pb2.Any()
        self._proc_off.Pack(ext_proc_pb2.ExtProcPerRoute(disabled=True))
        self._header_fallback_field = _length_delimited(
            _ROUTES_FIELD, self._header_fallback.SerializeToString()
        )
        self._host_fallback_field = _length_delimited(
            _ROUTES_FIELD, self._host_fallback.SerializeToString()
        )
        self.shared_skeleton = self._guarded(shared, "e2b-sandbox-id", header_routed=True)
        self.host_skeleton = self._guarded(by_host, ":authority", header_routed=False)
        for index in sorted((shared_index, host_index), reverse=True):
            del config.virtual_hosts[index]
        # the user, while `authorization` is still the client's (see the docstring)
        config.most_specific_header_mutations_wins = True
        user = config.request_headers_to_add.add()
        user.header.key = "x-agentcube-e2b-user"
        user.header.value = user_expression()
        user.append_action = _OVERWRITE
        user.keep_empty_value = False
        self._prefix = config.SerializeToString()

    def _guarded(self, vhost: rc.VirtualHost, key_header: str, *, header_routed: bool) -> bytes:
        static = list(vhost.routes)
        del vhost.routes[:]
        matcher = vhost.matcher
        guards = matcher.matcher_list.matchers
        path = guards.add()
        _regex(path.predicate, ":path", unsafe_path_regex())
        _routes(path.on_match, static)
        user = guards.add()
        either = user.predicate.not_matcher.or_matcher.predicate
        _regex(either.add().not_matcher, "authorization", ".*")  # absent
        _regex(either.add(), "authorization", fast_authorization_regex())
        _routes(user.on_match, static)
        if header_routed:
            host = guards.add()
            _regex(host.predicate.not_matcher, ":authority", shared_host_regex(self._domain))
            _routes(host.on_match, static)
        inner = matcher.on_no_match.matcher
        # An empty map is invalid to Envoy: "" stands in, answered as a miss is.
        _routes(_tree(inner, key_header).exact_match_map.map[""], static)
        _routes(inner.on_no_match, static)
        serialized: bytes = vhost.SerializeToString()
        return serialized

    def leaf(self, sandbox_id: str, route: FastRoute, jwt: str) -> Leaf:
        # RouteLists as bytes: the fast route serialized once, the fallbacks never again
        fast = _length_delimited(_ROUTES_FIELD, self._fast_route(sandbox_id, route, jwt))
        header = rc.VirtualHost()
        by_id = header.matcher.on_no_match.matcher.matcher_tree.exact_match_map.map[sandbox_id]
        port = _tree(by_id.matcher, "e2b-sandbox-port").exact_match_map.map[str(ENVD_PORT)]
        _route_list(self._with_token(port, route), fast + self._header_fallback_field)
        host = rc.VirtualHost()
        name = f"{ENVD_PORT}-{sandbox_id}.{self._domain}"
        by_name = host.matcher.on_no_match.matcher.matcher_tree.exact_match_map.map[name]
        _route_list(self._with_token(by_name, route), fast + self._host_fallback_field)
        return Leaf(header.SerializeToString(), host.SerializeToString())

    @staticmethod
    def _with_token(
        on_match: matcher_pb2.Matcher.OnMatch, route: FastRoute
    ) -> matcher_pb2.Matcher.OnMatch:
        """Where the sandbox's routes go: behind an exact `x-access-token` when it has one."""
        if not route.access_token:
            return on_match
        return _tree(on_match.matcher, "x-access-token").exact_match_map.map[route.access_token]

    def _fast_route(self, sandbox_id: str, route: FastRoute, jwt: str) -> bytes:
        fast = rc.Route(name=sandbox_id)
        fast.match.prefix = "/"
        gate = fast.match.runtime_fraction
        gate.default_value.numerator = 100  # of HUNDRED: on unless the runtime key says 0
        gate.runtime_key = GATE_KEY_PREFIX + sandbox_id
        # the ext_authz route's timeouts (none overall, the idle one), to another cluster
        fast.route.CopyFrom(self._header_fallback.route)
        fast.route.cluster = FAST_CLUSTER
        added = ((ORIGINAL_DST_HEADER, route.upstream_host), ("authorization", "Bearer " + jwt))
        for key, value in added:
            header = fast.request_headers_to_add.add()
            header.header.key = key
            header.header.value = value
            header.append_action = _OVERWRITE
        fast.request_headers_to_remove.extend(_REMOVED_HEADERS)
        fast.typed_per_filter_config[EXT_AUTHZ_FILTER].CopyFrom(self._authz_off)
        fast.typed_per_filter_config[EXT_PROC_FILTER].CopyFrom(self._proc_off)
        serialized: bytes = fast.SerializeToString()
        return serialized

    def assemble(self, leaves: Iterable[Leaf]) -> bytes:
        """The whole RouteConfiguration, serialized, with these sandboxes' fast routes."""
        header_parts = [self.shared_skeleton]
        host_parts = [self.host_skeleton]
        for leaf in leaves:
            header_parts.append(leaf.header)
            host_parts.append(leaf.host)
        return b"".join((self._prefix, _field(header_parts), _field(host_parts)))


def _route_list(on_match: matcher_pb2.Matcher.OnMatch, routes: bytes) -> None:
    """`on_match` runs the RouteList serialized as `routes`."""
    on_match.action.name = "routes"
    on_match.action.typed_config.type_url = _ROUTE_LIST_TYPE
    on_match.action.typed_config.value = routes


def _length_delimited(field: int, value: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(value)) + value


def _field(parts: list[bytes]) -> bytes:
    """`virtual_hosts` holding the concatenation of `parts` (one merged VirtualHost)."""
    size = sum(len(part) for part in parts)
    tag = _varint(_VHOSTS_FIELD << 3 | 2)  # wire type 2: length-delimited
    return b"".join((tag, _varint(size), *parts))


def _varint(value: int) -> bytes:
    """Protobuf's base-128 varint."""
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
