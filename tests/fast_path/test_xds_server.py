"""The ADS server on its own, driven as Envoy drives it: what it sends, when a sandbox is
switched off (gated), and what it remembers of an Envoy whose stream closed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from envoy.service.discovery.v3 import discovery_pb2 as discovery
from envoy.service.runtime.v3 import rtds_pb2

from extproc.core.xds_contract import (
    GATE_KEY_PREFIX,
    ROUTE_CONFIG,
    ROUTES_TYPE_URL,
    RUNTIME_LAYER,
    RUNTIME_TYPE_URL,
)
from extproc.edge.metrics import EdgeMetrics
from extproc.edge.xds_routes import FastRoute
from extproc.edge.xds_server import XdsServer

A = FastRoute("10.0.0.1:49983", "tok-a")
A_MOVED = FastRoute("10.0.0.9:49983", "tok-a")
B = FastRoute("10.0.0.2:49983", "tok-b")


class Envoy:
    """One ADS stream: requests we put, responses a task collects."""

    def __init__(self, server: XdsServer, applied: str = "") -> None:
        """`applied`: the versions the Envoy says it has (a reconnect), "" for a new one."""
        self.requests: asyncio.Queue[discovery.DiscoveryRequest | None] = asyncio.Queue()
        self.received: asyncio.Queue[discovery.DiscoveryResponse | None] = asyncio.Queue()
        for type_url, name in ((RUNTIME_TYPE_URL, RUNTIME_LAYER), (ROUTES_TYPE_URL, ROUTE_CONFIG)):
            self.requests.put_nowait(
                discovery.DiscoveryRequest(
                    type_url=type_url, resource_names=[name], version_info=applied
                )
            )
        self.pump = asyncio.create_task(self._pump(server))

    async def _requests(self) -> AsyncIterator[discovery.DiscoveryRequest]:
        while (request := await self.requests.get()) is not None:
            yield request

    async def _pump(self, server: XdsServer) -> None:
        async for response in server.StreamAggregatedResources(self._requests(), None):
            await self.received.put(response)
        await self.received.put(None)  # the stream ended

    async def receive(self) -> discovery.DiscoveryResponse:
        async with asyncio.timeout(5):
            response = await self.received.get()
        assert response is not None, "the stream ended"
        return response

    async def nothing_more(self) -> None:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await self.received.get()

    async def ended(self) -> None:
        async with asyncio.timeout(5):
            assert await self.received.get() is None
        await self.pump

    def ack(self, response: discovery.DiscoveryResponse, error: str = "") -> None:
        request = discovery.DiscoveryRequest(
            type_url=response.type_url,
            version_info=response.version_info,
            response_nonce=response.nonce,
        )
        if error:
            request.error_detail.code = 3
            request.error_detail.message = error
        self.requests.put_nowait(request)

    async def close(self) -> None:
        self.requests.put_nowait(None)
        await self.ended()


def gates(response: discovery.DiscoveryResponse) -> set[str]:
    assert response.type_url == RUNTIME_TYPE_URL
    layer = rtds_pb2.Runtime()
    response.resources[0].Unpack(layer)
    assert layer.name == RUNTIME_LAYER
    assert all(value.number_value == 0 for value in layer.layer.fields.values())
    return {key.removeprefix(GATE_KEY_PREFIX) for key in layer.layer.fields}


async def connected(server: XdsServer) -> tuple[Envoy, discovery.DiscoveryResponse]:
    """A new Envoy's stream that has applied the runtime layer and the routes; the routes
    response."""
    envoy = Envoy(server)
    runtime = await envoy.receive()
    assert runtime.type_url == RUNTIME_TYPE_URL
    envoy.ack(runtime)
    routes = await envoy.receive()
    assert routes.type_url == ROUTES_TYPE_URL
    envoy.ack(routes)
    await envoy.nothing_more()
    return envoy, routes


async def test_routes_wait_for_the_first_publication_and_are_sent_whole() -> None:
    server = XdsServer(EdgeMetrics())
    envoy = Envoy(server)
    assert gates(await envoy.receive()) == set()  # a starting Envoy needs it first
    await envoy.nothing_more()  # no routes before the directory has synced
    server.set_desired("sbxa", A)
    server.set_routes(b"config-1", {"sbxa": A})
    routes = await envoy.receive()
    assert (routes.version_info, routes.resources[0].value) == ("1", b"config-1")
    assert routes.resources[0].type_url == ROUTES_TYPE_URL
    # one response of a type in flight: newer routes wait for the answer, then go out whole
    server.set_routes(b"config-2", {"sbxa": A})
    server.set_routes(b"config-3", {"sbxa": A})
    await envoy.nothing_more()
    envoy.ack(routes)
    assert (await envoy.receive()).resources[0].value == b"config-3"
    assert server.serving("sbxa")
    await envoy.close()


async def test_a_dropped_sandbox_is_switched_off_until_routes_without_it_land() -> None:
    server = XdsServer(EdgeMetrics())
    server.set_desired("sbxa", A)
    server.set_desired("sbxb", B)
    server.set_routes(b"a-and-b", {"sbxa": A, "sbxb": B})
    envoy, _ = await connected(server)
    assert await server.landed("sbxa", 0.01)  # nothing stale: nothing to wait for
    server.set_desired("sbxa", None)  # killed
    landed = asyncio.create_task(server.landed("sbxa", 5))
    runtime = await envoy.receive()
    assert gates(runtime) == {"sbxa"}
    await asyncio.sleep(0.01)
    assert not landed.done()  # Envoy has not applied the gate yet
    envoy.ack(runtime)
    assert await landed
    server.set_routes(b"b", {"sbxb": B})
    routes = await envoy.receive()
    assert server.gated == {"sbxa"}  # still: Envoy may apply the new routes or not
    envoy.ack(routes)
    lifted = await envoy.receive()
    assert gates(lifted) == set()
    envoy.ack(lifted)
    await envoy.nothing_more()
    assert server.serving("sbxb") and not server.serving("sbxa")
    await envoy.close()


async def test_a_moved_sandbox_is_off_until_its_new_route_lands() -> None:
    server = XdsServer(EdgeMetrics())
    server.set_desired("sbxa", A)
    server.set_routes(b"a", {"sbxa": A})
    envoy, _ = await connected(server)
    server.set_desired("sbxa", A_MOVED)
    gate = await envoy.receive()
    assert gates(gate) == {"sbxa"}  # its old route must not be served meanwhile
    server.set_routes(b"a-moved", {"sbxa": A_MOVED})
    routes = await envoy.receive()
    envoy.ack(routes)
    await envoy.nothing_more()  # the lifted gate waits for the gate in flight
    assert not server.serving("sbxa")
    envoy.ack(gate)
    lifted = await envoy.receive()
    assert gates(lifted) == set()
    envoy.ack(lifted)
    await envoy.nothing_more()
    assert server.serving("sbxa")
    await envoy.close()


async def test_a_rejected_update_is_counted_and_the_last_applied_one_stands() -> None:
    metrics = EdgeMetrics()
    server = XdsServer(metrics)
    server.set_desired("sbxa", A)
    server.set_routes(b"good", {"sbxa": A})
    envoy, _ = await connected(server)
    server.set_desired("sbxb", B)
    server.set_routes(b"bad", {"sbxa": A, "sbxb": B})
    envoy.ack(await envoy.receive(), error="invalid route")
    await asyncio.sleep(0.01)
    assert metrics.xds_rejections.labels("rds")._value.get() == 1
    assert server.serving("sbxa") and not server.serving("sbxb")
    await envoy.close()


async def test_a_reconnecting_envoy_is_told_what_went_stale_while_it_was_away() -> None:
    server = XdsServer(EdgeMetrics())
    server.set_desired("sbxa", A)
    server.set_routes(b"a", {"sbxa": A})
    envoy, _ = await connected(server)
    await envoy.close()
    server.set_desired("sbxa", None)  # killed while no stream is open
    assert await server.landed("sbxa", 0.01)  # nobody to wait for
    back = Envoy(server, applied="1")
    assert (await back.receive()).type_url == ROUTES_TYPE_URL
    assert gates(await back.receive()) == {"sbxa"}  # right behind the routes
    await back.close()


async def test_an_envoy_holding_a_runtime_layer_gets_routes_before_a_new_one() -> None:
    """An edge that has just started knows nothing of the gates Envoy holds from the edge
    before it: Envoy keeps them until routes without those sandboxes replaced its old ones."""
    server = XdsServer(EdgeMetrics())
    envoy = Envoy(server, applied="7")  # versions of another edge process
    await envoy.nothing_more()  # not even the runtime layer before the routes
    server.set_routes(b"nothing", {})
    assert (await envoy.receive()).type_url == ROUTES_TYPE_URL
    assert gates(await envoy.receive()) == set()
    await envoy.close()


async def test_closing_ends_every_stream() -> None:
    server = XdsServer(EdgeMetrics())
    envoy = Envoy(server)
    await envoy.receive()
    server.close()
    await envoy.ended()
