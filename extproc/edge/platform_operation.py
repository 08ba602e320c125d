"""What one platform API operation is: its row in the path table, the request it is given,
and the lifecycle clients it runs with.

An `Operation` carries everything the router, the retry policy and the call's deadline read,
so that adding an operation is one row (rest_routes.OPERATIONS) and nothing is kept in step
by name. Handlers are plain async functions of (context, request, call): the sandbox, template
and volume handlers live in their own modules and share one `PlatformContext` rather than
each holding copies of the same stubs and directory hooks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import grpc

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2_grpc as pb_grpc
from extproc.core.quotas import QuotaTable
from extproc.edge.rest_wire import Answer
from extproc.edge.sandbox_directory import route_from_proto
from extproc.edge.watching import Settling

# Deadline for one lifecycle call, seconds: most calls read or write a record.
DEFAULT_DEADLINE_S = 30.0
# A call that waits for sandboxes to boot or stop (create, resume, connect, pause, fork).
BOOT_DEADLINE_S = 120.0


@dataclass(frozen=True, slots=True)
class PlatformRequest:
    method: str
    path: str  # with the query string
    headers: dict[str, str]  # lowercase keys
    body: bytes
    tenant: str
    # The port of the listener the request came in on (Envoy strips it from the host);
    # 0 when unknown. Upload links are built from it (template_api.py).
    listener_port: int = 0

    @property
    def query(self) -> str:
        return self.path.partition("?")[2]


@dataclass(frozen=True, slots=True)
class PlatformContext:
    """The lifecycle service's stubs and this edge's routing-directory hooks."""

    sandboxes: pb_grpc.SandboxServiceStub
    templates: pb_grpc.TemplateServiceStub
    builds: pb_grpc.TemplateBuildServiceStub
    snapshots: pb_grpc.SnapshotServiceStub
    volumes: pb_grpc.VolumeServiceStub
    domain: str
    # The live quota table (the key index's, swapped on every reload).
    quotas: Callable[[], QuotaTable]
    # Applies a reply's sandbox (new, paused, resumed, a new end time) to the directory at
    # once: the watch event follows within milliseconds, but the SDK's very next request
    # must already see the new state.
    learn: Callable[[pb.Sandbox], None]
    # Drops a killed sandbox from the directory, for the same reason.
    forget: Callable[[str], None]
    # Records what this edge's watch stream shows of a sandbox during a call (watching.py).
    settling: Callable[[str], AbstractContextManager[Settling]]

    @classmethod
    def on(
        cls,
        channel: grpc.aio.Channel,
        domain: str,
        quotas: Callable[[], QuotaTable],
        learn: Callable[[pb.Sandbox], None],
        forget: Callable[[str], None],
        settling: Callable[[str], AbstractContextManager[Settling]],
    ) -> PlatformContext:
        return cls(
            sandboxes=pb_grpc.SandboxServiceStub(channel),
            templates=pb_grpc.TemplateServiceStub(channel),
            builds=pb_grpc.TemplateBuildServiceStub(channel),
            snapshots=pb_grpc.SnapshotServiceStub(channel),
            volumes=pb_grpc.VolumeServiceStub(channel),
            domain=domain,
            quotas=quotas,
            learn=learn,
            forget=forget,
            settling=settling,
        )

    async def change(self, call: Call, rpc: Callable[..., Awaitable[Any]], message: Any) -> Any:
        """The reply of `rpc(message)`, a call that changes the sandbox `call` names, once
        the reply's sandbox is applied here and shown by this edge's watch stream."""
        with self.settling(call.resource_id) as settling:
            reply = await rpc(message, timeout=call.operation.deadline_s)
            if reply.HasField("sandbox"):  # an old lifecycle may send none
                self.learn(reply.sandbox)
                await settling.until_shows(route_from_proto(reply.sandbox))
            return reply


Handler = Callable[[PlatformContext, PlatformRequest, "Call"], Awaitable[Answer]]


@dataclass(frozen=True, slots=True)
class Operation:
    """One row of the platform API: `method` on `path` is answered by `handler`."""

    method: str
    # "{id}" is one non-empty segment.
    path: str
    # The `operation` label of the platform request metric.
    name: str
    handler: Handler
    # False: not safe to repeat blindly, since a retry after an unseen success would act
    # twice; its failures say `Should-Retry: false` unless the request has an Idempotency-Key.
    retryable: bool = True
    # The deadline of each lifecycle call the handler makes, seconds.
    deadline_s: float = DEFAULT_DEADLINE_S

    @property
    def v2(self) -> bool:
        """E2B's v2 of an operation whose v1 is still served (create, connect)."""
        return self.path.startswith("/v2/")

    @property
    def names_sandbox(self) -> bool:
        """The first `{id}` is a sandbox id, checked before any lifecycle call."""
        return "/sandboxes/{id}" in self.path


@dataclass(frozen=True, slots=True)
class Unsupported:
    """A row for a feature this gateway does not have: 501 naming it."""

    method: str
    path: str
    what: str


@dataclass(frozen=True, slots=True)
class Call:
    """A request matched to its operation, with the path's `{id}` segments in order."""

    operation: Operation
    ids: tuple[str, ...] = ()

    @property
    def resource_id(self) -> str:
        return self.ids[0] if self.ids else ""
