"""agentcube-e2b: an E2B-compatible gateway for AgentCube.

One package, one subpackage per deployable surface (`picod`, `lifecycle`, `edge`), a pure
`core` they share, and generated stubs in `_gen`. Surfaces never import each other.
"""
