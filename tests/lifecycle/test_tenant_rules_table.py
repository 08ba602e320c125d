"""The tenant rule of every unary lifecycle RPC, one table, checked on the servicers' handlers.

Each RPC is a method or a `handling.OneCall` row; either way an empty tenant must be refused
before the backend is called, unless the RPC reads every tenant and the call carries the
every-tenant scope. The RPC list comes from the proto, so a new RPC that is not classified
here fails the table. The same table checks that a call, once at the backend, runs to its
end when its caller is cancelled (`handling`).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc.core.caller_token import ALL_TENANTS_METADATA
from extproc.core.errors import NotFound
from extproc.lifecycle import backend as backend_protocol
from extproc.lifecycle import handling
from extproc.lifecycle.build_service import SnapshotServicer, TemplateBuildServicer
from extproc.lifecycle.service import SandboxServicer, TemplateServicer
from extproc.lifecycle.volume_service import VolumeServicer

# The RPCs whose empty tenant means every tenant (for a caller with the scope).
EVERY_TENANT = {"GetSandbox", "ListSandboxes", "KillSandbox", "GetSandboxMetrics",
                "ListTemplates", "GetTemplate"}  # fmt: skip
SERVICERS: dict[str, Callable[[Any], Any]] = {
    "SandboxService": lambda backend: SandboxServicer(backend, max_timeout_s=3600),
    "TemplateService": TemplateServicer,
    "VolumeService": VolumeServicer,
    "TemplateBuildService": TemplateBuildServicer,
    "SnapshotService": lambda backend: SnapshotServicer(backend, max_timeout_s=3600),
}
UNARY_RPCS = [
    (service, method.name)
    for service in SERVICERS
    for method in pb.DESCRIPTOR.services_by_name[service].methods
    if not method.server_streaming
]


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(code, message)
        self.code, self.message = code, message


class Context:
    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    async def abort(self, code: grpc.StatusCode, message: str) -> None:
        raise Aborted(code, message)


class Backend:
    """Records which method was called with which tenant, then answers NOT_FOUND."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        async def call(*args: Any) -> Any:
            self.calls.append((name, args))
            raise NotFound("the double has nothing")

        return call


def _request(service: str, rpc: str, tenant: str) -> Any:
    method = pb.DESCRIPTOR.services_by_name[service].methods_by_name[rpc]
    request = getattr(pb, method.input_type.name)()
    request.tenant = tenant
    if "tags" in method.input_type.fields_by_name:
        request.tags.append("v1")  # an empty tag list is refused before the backend
    return request


def _tenant_given(backend: Backend) -> str:
    """The tenant the one backend call was given, by the `Backend` protocol's parameter names
    (Create's is in its spec, ListSandboxes' in its query)."""
    [(name, args)] = backend.calls
    given = inspect.signature(getattr(backend_protocol.Backend, name)).bind(None, *args)
    if "tenant" in given.arguments:
        return str(given.arguments["tenant"])
    [one] = args
    return str(one.tenant)


async def _call(service: str, rpc: str, tenant: str, scoped: bool) -> tuple[Aborted, Backend]:
    backend = Backend()
    handler = getattr(SERVICERS[service](backend), rpc)
    with pytest.raises(Aborted) as aborted:
        context = Context(ALL_TENANTS_METADATA if scoped else ())
        await handler(_request(service, rpc, tenant), context)
    return aborted.value, backend


def test_the_table_names_real_rpcs() -> None:
    assert {rpc for _, rpc in UNARY_RPCS} >= EVERY_TENANT
    assert len(UNARY_RPCS) > 25


@pytest.mark.parametrize(("service", "rpc"), UNARY_RPCS)
async def test_an_empty_tenant_without_the_scope_is_refused(service: str, rpc: str) -> None:
    aborted, backend = await _call(service, rpc, tenant="", scoped=False)
    assert aborted.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "tenant is required" in aborted.message
    assert backend.calls == []


@pytest.mark.parametrize(("service", "rpc"), UNARY_RPCS)
async def test_an_empty_tenant_with_the_scope(service: str, rpc: str) -> None:
    aborted, backend = await _call(service, rpc, tenant="", scoped=True)
    if rpc in EVERY_TENANT:
        assert aborted.code is grpc.StatusCode.NOT_FOUND, aborted.message
        assert _tenant_given(backend) == ""
    else:
        assert aborted.code is grpc.StatusCode.INVALID_ARGUMENT
        assert "acts for one tenant" in aborted.message
        assert backend.calls == []


@pytest.mark.parametrize(("service", "rpc"), UNARY_RPCS)
async def test_a_tenant_reaches_the_backend_and_its_errors_become_statuses(
    service: str, rpc: str
) -> None:
    aborted, backend = await _call(service, rpc, tenant="t-1", scoped=False)
    assert aborted.code is grpc.StatusCode.NOT_FOUND, aborted.message
    assert aborted.message == "the double has nothing"
    assert _tenant_given(backend) == "t-1"


class SlowBackend:
    """Every call waits for `release`, then records that it finished."""

    def __init__(self) -> None:
        self.called = asyncio.Event()
        self.release = asyncio.Event()
        self.finished: list[str] = []

    def __getattr__(self, name: str) -> Any:
        async def call(*args: Any) -> Any:
            self.called.set()
            await self.release.wait()
            self.finished.append(name)
            raise NotFound("the double has nothing")

        return call


@pytest.mark.parametrize(("service", "rpc"), UNARY_RPCS)
async def test_a_call_whose_caller_is_cancelled_runs_to_its_end(service: str, rpc: str) -> None:
    # grpc cancels the handler when the caller goes (a client timeout, a reset): a create
    # cut off there would leave a sandbox nobody knows of
    backend = SlowBackend()
    handler = getattr(SERVICERS[service](backend), rpc)
    caller = asyncio.ensure_future(handler(_request(service, rpc, "t-1"), Context(())))
    await asyncio.wait_for(backend.called.wait(), 5)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert backend.finished == []
    settled = asyncio.ensure_future(handling.settle())
    await asyncio.sleep(0)
    assert not settled.done()  # a stopping server waits for it
    backend.release.set()
    await asyncio.wait_for(settled, 5)
    assert len(backend.finished) == 1
