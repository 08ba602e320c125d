"""Which sandboxes earn a fast route, and the fast path keeping routes in step with the
directory: additions, removals at once, expiry before the end, JWTs renewed ahead."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import jwt
import pytest
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2

from edge.fake_lifecycle import make_sandbox
from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc.core.identity import load_or_create_router_identity
from extproc.edge.fast_path import FastPath, fast_route_of
from extproc.edge.metrics import EdgeMetrics
from extproc.edge.sandbox_directory import Directory, Route, route_from_proto
from extproc.edge.settings import FastPathSettings, TokenSettings
from extproc.edge.tokens import TokenSigner
from extproc.edge.xds_routes import FastRoute, FastRoutes
from extproc.edge.xds_server import XdsServer
from extproc.envoy_config.routes import route_configuration
from extproc.envoy_config.settings import EnvoySettings

DOMAIN = "e2b.test"
NOW = 1_800_000_000.0


def _route(**changes: object) -> Route:
    sandbox = make_sandbox("sbxa", "default", endpoint_host="10.0.0.1")
    sandbox.end_at.seconds = int(NOW + 300)
    return replace(route_from_proto(sandbox), **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        (_route(), FastRoute("10.0.0.1:49983", "tok-sbxa")),
        (_route(secure=False), FastRoute("10.0.0.1:49983", "")),
        (_route(end_at=0.0), FastRoute("10.0.0.1:49983", "tok-sbxa")),  # no known end
        (_route(state=pb.SANDBOX_STATE_PAUSED), None),
        (_route(state=pb.SANDBOX_STATE_PAUSED, auto_resume=True), None),
        (_route(endpoint_host=""), None),  # not routable yet
        (_route(end_at=NOW + 0.5), None),  # within the margin of its end
        (_route(end_at=NOW - 1), None),
        (_route(access_token_sha256=b"x" * 32, envd_access_token=""), None),  # Kubernetes
        (_route(open_ports=frozenset({49983})), None),  # Kubernetes
    ],
)
def test_which_sandboxes_get_a_fast_route(route: Route, expected: FastRoute | None) -> None:
    assert fast_route_of(route, NOW, 1.0) == expected


class Running:
    def __init__(self, path: FastPath, server: XdsServer, directory: Directory) -> None:
        self.path, self.server, self.directory = path, server, directory
        self.published: list[dict[str, tuple[FastRoute, str]]] = []


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    identity = tmp_path / "identity"
    public_pem = load_or_create_router_identity(identity).public_pem
    signer = TokenSigner(TokenSettings(identity, lifetime_s=2, refresh_margin_s=0))
    directory = Directory()
    server = XdsServer(EdgeMetrics())
    static = bytes(route_configuration(EnvoySettings(domain=DOMAIN, fast_path=True)))
    settings = FastPathSettings(coalesce_s=0.001, expiry_margin_s=0.2)
    path = FastPath(directory, signer, FastRoutes(static, DOMAIN), server, settings)
    running = Running(path, server, directory)
    publish = server.set_routes

    def recorded(config: bytes, contents: dict[str, FastRoute]) -> None:
        running.published.append(_fast_routes(config, public_pem))
        publish(config, contents)

    server.set_routes = recorded  # type: ignore[method-assign]
    server.connected.set()  # as if an Envoy were on a stream: routes are built only for one
    synced = asyncio.Event()
    task = asyncio.create_task(path.run(synced))
    synced.set()
    try:
        yield running
    finally:
        task.cancel()
        path.close()
        with pytest.raises(asyncio.CancelledError):
            await task


def _fast_routes(config: bytes, public_pem: bytes) -> dict[str, tuple[FastRoute, str]]:
    """sandbox id -> (its fast route, the session of its JWT), read back from the bytes."""
    parsed = route_pb2.RouteConfiguration.FromString(config)
    (shared,) = [vhost for vhost in parsed.virtual_hosts if vhost.name == "shared"]
    found = {}
    for (
        sandbox_id,
        by_id,
    ) in shared.matcher.on_no_match.matcher.matcher_tree.exact_match_map.map.items():
        if not sandbox_id:
            continue  # the stand-in for an empty map
        port = by_id.matcher.matcher_tree.exact_match_map.map["49983"]
        tokens = port.matcher.matcher_tree.exact_match_map.map
        token, leaf = next(iter(tokens.items())) if tokens else ("", port)
        listed = rc.RouteList()
        leaf.action.typed_config.Unpack(listed)
        added = {h.header.key: h.header.value for h in listed.routes[0].request_headers_to_add}
        claims = jwt.decode(
            added["authorization"].removeprefix("Bearer "),
            public_pem,
            algorithms=["RS256"],
            options={"verify_exp": False},
        )
        route = FastRoute(added["x-envoy-original-dst-host"], token)
        found[sandbox_id] = (route, f"{claims['session_id']}@{claims['iat']}")
    return found


async def _until(condition: object, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met"
        await asyncio.sleep(0.005)


async def test_a_running_sandbox_is_published_and_a_killed_one_switched_off_at_once(
    running: Running,
) -> None:
    sandbox = make_sandbox("sbxa", "default", endpoint_host="10.0.0.1")
    running.directory.put(route_from_proto(sandbox))
    await _until(lambda: running.published and "sbxa" in running.published[-1])
    route, session = running.published[-1]["sbxa"]
    assert route == FastRoute("10.0.0.1:49983", "tok-sbxa")
    assert session.startswith("sbxa@")
    # what Envoy may hold is now stale: gated synchronously, before any rebuild
    calls: list[tuple[str, FastRoute | None]] = []
    running.server.set_desired = lambda sandbox_id, route: calls.append((sandbox_id, route))  # type: ignore[method-assign]
    running.directory.remove("sbxa")
    assert calls == [("sbxa", None)]
    await _until(lambda: "sbxa" not in running.published[-1])


async def test_a_sandbox_leaves_before_its_end_and_jwts_are_renewed_ahead(
    running: Running,
) -> None:
    ending = make_sandbox("sbxend", "default", endpoint_host="10.0.0.2")
    end_at = time.time() + 0.6
    ending.end_at.seconds = int(end_at)
    ending.end_at.nanos = int(end_at % 1 * 1e9)
    lasting = make_sandbox("sbxlast", "default", endpoint_host="10.0.0.3")
    for sandbox in (ending, lasting):
        running.directory.put(route_from_proto(sandbox))
    await _until(lambda: running.published and {"sbxend", "sbxlast"} <= set(running.published[-1]))
    first_jwt = running.published[-1]["sbxlast"][1]
    switched_off: list[float] = []
    set_desired = running.server.set_desired

    def recorded(sandbox_id: str, route: FastRoute | None) -> None:
        if sandbox_id == "sbxend" and route is None:
            switched_off.append(time.time())
        set_desired(sandbox_id, route)

    running.server.set_desired = recorded  # type: ignore[method-assign]
    # switched off before its end (at end_at - margin), with no event from anyone
    await _until(lambda: "sbxend" not in running.published[-1], timeout_s=2)
    assert len(switched_off) == 1 and switched_off[0] < end_at
    # a 2 s JWT is renewed after 60 % of its life: a new one is pushed well before it ends
    await _until(lambda: running.published[-1]["sbxlast"][1] != first_jwt, timeout_s=3)


async def test_an_idle_fast_path_sleeps(running: Running) -> None:
    """No sandboxes, no changes: nothing to do until one comes (no busy loop)."""
    rounds = 0
    sign = running.path._sign

    async def counted(renew_within_s: float) -> None:
        nonlocal rounds
        rounds += 1
        await sign(renew_within_s)

    running.path._sign = counted  # type: ignore[method-assign]
    await asyncio.sleep(0.3)
    assert rounds <= 1
    running.directory.put(route_from_proto(make_sandbox("sbxa", "default")))
    await _until(lambda: rounds >= 1)
