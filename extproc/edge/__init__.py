"""The edge: Envoy's ext_authz (data-plane decisions) and ext_proc (E2B platform REST) server."""
