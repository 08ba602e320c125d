"""End-to-end tests: the real SDKs through real Envoy, edge, lifecycle and picod."""
