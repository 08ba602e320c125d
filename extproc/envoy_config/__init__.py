"""The Envoy bootstrap for the gateway, built from typed messages.

The bootstrap is assembled from envoy-data-plane (betterproto2) messages rather than templated
YAML, so a misspelt field or a wrong type fails while building, not when Envoy starts. It is
rendered to YAML once (`agentcube-e2b envoy-config`, `agentcube-e2b up`); nothing here runs on
the request path. `envoy/envoy.yaml` is this module's output for the default settings, and a test
keeps the two equal.
"""

from __future__ import annotations

import importlib
import warnings

# envoy-data-plane 2.2.0's generated classes use a pydantic idiom that pydantic 2.12 deprecates;
# the warning fires once, at class creation. Import the modules the builder uses here, with that
# one warning silenced, so that the rest of the package (and strict test runs) never see it.
_MESSAGE_MODULES = (
    "envoy.config.accesslog.v3",
    "envoy.config.bootstrap.v3",
    "envoy.config.cluster.v3",
    "envoy.config.common.mutation_rules.v3",
    "envoy.config.core.v3",
    "envoy.config.endpoint.v3",
    "envoy.config.listener.v3",
    "envoy.config.overload.v3",
    "envoy.config.route.v3",
    "envoy.extensions.access_loggers.filters.cel.v3",
    "envoy.extensions.access_loggers.stream.v3",
    "envoy.extensions.filters.http.ext_authz.v3",
    "envoy.extensions.filters.http.ext_proc.v3",
    "envoy.extensions.filters.http.header_mutation.v3",
    "envoy.extensions.filters.http.router.v3",
    "envoy.extensions.filters.network.http_connection_manager.v3",
    "envoy.extensions.resource_monitors.downstream_connections.v3",
    "envoy.extensions.upstreams.http.v3",
    "envoy.type.matcher.v3",
    "envoy.type.metadata.v3",
    "envoy.type.v3",
    "google.protobuf",
)
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*model_validator.*", category=DeprecationWarning)
    for _name in _MESSAGE_MODULES:
        importlib.import_module(f"envoy_data_plane.{_name}")
