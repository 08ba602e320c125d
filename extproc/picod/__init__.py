"""picod: the envd-compatible daemon inside each sandbox.

It speaks E2B's envd protocol (Connect RPC `process.Process` and `filesystem.Filesystem`,
plus plain HTTP `/files`, `/health`, `/envs`, `/metrics`) so the unmodified E2B SDKs work,
and verifies the gateway's JWT the way AgentCube's PicoD does.
"""
