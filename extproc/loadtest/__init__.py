"""`agentcube-e2b loadtest`: drive a running gateway with E2B clients and report from its
Envoy's admin stats (docs/benchmarks.md, "Load-testing a deployment").

A client of the gateway, like the SDKs: it imports no surface's code (nor the Envoy config
packages, which take seconds to import), only `core` helpers and the E2B SDK.
"""
