"""What the Envoy bootstrap (extproc/envoy_config) and the edge's xDS server agree on.

With the fast path on, Envoy takes its routes (RDS) and one runtime layer (RTDS) from the
edge over one ADS stream on the edge cluster. The bootstrap names the resources and the
cluster the fast routes use; the edge fills them in. Both sides import the names from here,
a module without the envoy-data-plane import (seconds) the bootstrap builder pays.
"""

from __future__ import annotations

# the HCM's RouteConfiguration, served by RDS over ADS
ROUTE_CONFIG = "e2b"
ROUTES_TYPE_URL = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
# the runtime layer whose keys switch single fast routes off (RTDS over ADS)
RUNTIME_LAYER = "agentcube-e2b-fast-path"
RUNTIME_TYPE_URL = "type.googleapis.com/envoy.service.runtime.v3.Runtime"
# `<prefix><sandbox id>` = 0 turns that sandbox's fast routes off; absent means on
GATE_KEY_PREFIX = "agentcube_e2b.fast_path."
# ORIGINAL_DST on `x-envoy-original-dst-host`, which only a fast route sets (the first filter
# strips it from clients)
FAST_CLUSTER = "sandbox_fast"
ORIGINAL_DST_HEADER = "x-envoy-original-dst-host"
# the static virtual hosts the fast path extends, and their ext_authz routes it falls back to
SHARED_VHOST = "shared"
SANDBOX_VHOST = "sandbox"
HEADER_FALLBACK_ROUTE = "sandbox-by-e2b-sandbox-id"
HOST_FALLBACK_ROUTE = "sandbox-by-host"
# the HTTP filters a fast route turns off
EXT_AUTHZ_FILTER = "envoy.filters.http.ext_authz"
EXT_PROC_FILTER = "envoy.filters.http.ext_proc"
