"""The E2B platform REST API: one method per operation, each one lifecycle call.

Handlers receive the tenant ext_authz established (never a header) and pass it to
lifecycle, which hides other tenants' sandboxes as NOT_FOUND. Success statuses are E2B's
exactly (201 create/resume, 204 kill/timeout/refresh/pause, 200 or 201 connect) because the
SDK accepts nothing else. Failures go through rest_wire's one table; operations that are not
safe to repeat say `Should-Retry: false`, since the SDK otherwise retries 5xx/429 POSTs.

Rate limit: every platform request first takes a token from its API key's bucket
(`requestsPerSecond` of the key's namespace, core/quotas.py), here rather than in Envoy's
local rate limit because the per-namespace numbers live in the key index the edge already
holds and reloads; it costs about a microsecond of CPU (tests/bench/quota_bench.py). Over the
limit is E2B's 429 with `Retry-After: 1`, which the SDK's retry policy honours. The
namespace's `maxSandboxes` and `createsPerMinute` travel on CreateSandbox: the lifecycle
service enforces those, where the count of sandboxes is exact.

State changes are visible at once: a kill, pause, resume, connect, timeout or refresh that
succeeds is applied to this edge's routing directory from lifecycle's reply before the
answer goes out (`learn`, `forget`), so the SDK's very next request sees it, e.g. "not found"
for a sandbox just paused rather than a request hanging on its stopped daemon. The watch
event that follows carries the same state and changes nothing. A change is answered once this
edge's own watch stream has shown it too (`settling`, watching.py), so that the sibling edge
processes, fed by the same fan-out, most likely know it as well when the next request reaches
one of them (watching.py says how likely).
A create is learnt the same way, so a request for the new sandbox (a signed URL, which names
no sandbox, included) finds it without a fallback read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import grpc

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2_grpc as pb_grpc
from extproc.core.api_keys import hash_api_key
from extproc.core.errors import Conflict, DomainError, NotFound
from extproc.core.hosts import is_sandbox_id
from extproc.core.quotas import DEFAULT_TABLE, QuotaTable, RateLimiter
from extproc.core.request_context import note_request
from extproc.edge import rest_json, rest_requests
from extproc.edge.rest_routes import NoRoute, Operation, resolve
from extproc.edge.rest_wire import Answer, error_answer, from_grpc, json_answer, no_content
from extproc.edge.routes import route_from_proto
from extproc.edge.template_api import TemplateApi
from extproc.edge.volume_api import VolumeApi
from extproc.edge.watching import Settling, unsettled

log = logging.getLogger(__name__)

# Not safe to repeat blindly: a retry after an unseen success would act twice.
_NOT_RETRYABLE = frozenset(
    {
        "create_v1",
        "create_v2",
        "pause",
        "resume",
        "create_volume",
        "build_template",
        "start_template_build",
        "create_snapshot",
        "fork",
    }
)
# Deadline for one lifecycle call, seconds; create waits for the sandbox to boot.
_CALL_TIMEOUT_S = {"create_v1": 120.0, "create_v2": 120.0, "resume": 120.0}
_DEFAULT_CALL_TIMEOUT_S = 30.0


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


class PlatformApi:
    def __init__(
        self,
        channel: grpc.aio.Channel,
        domain: str,
        forget: Callable[[str], None] = lambda sandbox_id: None,
        quotas: Callable[[], QuotaTable] = lambda: DEFAULT_TABLE,
        learn: Callable[[pb.Sandbox], None] = lambda sandbox: None,
        clock: Callable[[], float] = time.monotonic,
        settling: Callable[[str], AbstractContextManager[Settling]] = unsettled,
    ) -> None:
        # The live quota table (the key index's, swapped on every reload) and a monotonic
        # clock in seconds for the per-key request buckets.
        self._quotas = quotas
        self._clock = clock
        self._rates = RateLimiter()
        self._sandboxes = pb_grpc.SandboxServiceStub(channel)
        # Drops a killed sandbox from this edge's routing directory at once: the watch event
        # follows within milliseconds, but the SDK's very next request must already see
        # "not found" rather than a refused connection ("port is not open").
        self._forget = forget
        # Applies a reply's sandbox (paused, resumed, new end time) to the directory the same
        # way, for the same reason.
        self._learn = learn
        # Records what this edge's watch stream shows of a sandbox during a call (watching.py).
        self._settling = settling
        self._templates = pb_grpc.TemplateServiceStub(channel)
        self._domain = domain
        self._handlers: dict[str, Callable[[PlatformRequest, str], Awaitable[Answer]]] = {
            "create_v1": self._create,
            "create_v2": self._create,
            "list_v1": self._list_v1,
            "list_v2": self._list_v2,
            "get": self._get,
            "kill": self._kill,
            "set_timeout": self._set_timeout,
            "refresh": self._refresh,
            "connect_v1": self._connect,
            "connect_v2": self._connect,
            "pause": self._pause,
            "resume": self._resume,
            "metrics": self._metrics,
            "health": self._health,
            "list_templates": self._list_templates,
            "get_template": self._get_template,
            **self._volume_handlers(VolumeApi(channel)),
        }
        # Operations that need the whole route (several ids): template builds, snapshots.
        self._route_handlers = TemplateApi(channel, learn, domain).handlers()

    async def handle(self, request: PlatformRequest) -> tuple[str, Answer]:
        """(operation name for metrics, answer). Never raises for a request's fault."""
        limited = self._rate_limited(request)
        if limited is not None:
            return "rate_limited", limited
        route = resolve(request.method, request.path)
        if isinstance(route, NoRoute):
            body = {"code": route.status, "message": route.message}
            allow = (("allow", ", ".join(route.allowed)),) if route.allowed else ()
            return "none", json_answer(route.status, body, allow)
        retryable = route.name not in _NOT_RETRYABLE or bool(request.headers.get("idempotency-key"))
        try:
            with_route = self._route_handlers.get(route.name)
            if with_route is not None:
                self._resource(route)  # a sandbox id is checked as for any other operation
                return route.name, await with_route(request, route)
            return route.name, await self._handlers[route.name](request, self._resource(route))
        except grpc.aio.AioRpcError as error:
            return route.name, error_answer(from_grpc(error), retryable)
        except DomainError as error:
            return route.name, error_answer(error, retryable)
        except Exception as error:  # the answer must still be E2B JSON; keep the traceback
            log.exception("platform operation %s failed", route.name)
            return route.name, error_answer(error, retryable)

    def _rate_limited(self, request: PlatformRequest) -> Answer | None:
        """E2B's 429 when the request's API key is over its namespace's requests per second."""
        rate = self._quotas().for_namespace(request.tenant).requests_per_second
        key = request.headers.get("x-api-key")
        bucket = hash_api_key(key) if key else "tenant:" + request.tenant
        if self._rates.allow(bucket, rate, rate, self._clock()):
            return None
        message = (
            f"rate limit exceeded: at most {rate} platform API requests per second per API key "
            f"in namespace {request.tenant!r} (requestsPerSecond); retry later"
        )
        return json_answer(429, {"code": 429, "message": message}, (("retry-after", "1"),))

    def _resource(self, route: Operation) -> str:
        if "template" in route.name or route.name.endswith("volume") or not route.resource_id:
            return route.resource_id
        if not is_sandbox_id(route.resource_id):
            # No sandbox can have this id (hosts split on '-'), so it does not exist.
            raise NotFound(f"sandbox {route.resource_id!r} not found")
        note_request(sandbox_id=route.resource_id)
        return route.resource_id

    @staticmethod
    def _volume_handlers(
        volumes: VolumeApi,
    ) -> dict[str, Callable[[PlatformRequest, str], Awaitable[Answer]]]:
        return {
            "create_volume": volumes.create,
            "list_volumes": volumes.list,
            "get_volume": volumes.get,
            "delete_volume": volumes.delete,
        }

    def _timeout(self, operation: str) -> float:
        return _CALL_TIMEOUT_S.get(operation, _DEFAULT_CALL_TIMEOUT_S)

    async def _changing(self, sandbox_id: str, call: Callable[[], Awaitable[Any]]) -> Any:
        """`call()`'s reply, once its sandbox is applied here and shown by the watch stream."""
        with self._settling(sandbox_id) as settling:
            reply = await call()
            if reply.HasField("sandbox"):  # an old lifecycle may send none
                self._learn(reply.sandbox)
                await settling.until_shows(route_from_proto(reply.sandbox))
            return reply

    # --- sandboxes ----------------------------------------------------------------------

    async def _create(self, request: PlatformRequest, _: str) -> Answer:
        v2 = request.path.startswith("/v2/")
        create = rest_requests.create_request(
            rest_requests.json_object(request.body),
            request.tenant,
            v2=v2,
            idempotency_key=request.headers.get("idempotency-key"),
        )
        quota = self._quotas().for_namespace(request.tenant)
        create.quota.max_sandboxes = quota.max_sandboxes
        create.quota.creates_per_minute = quota.creates_per_minute
        reply = await self._sandboxes.CreateSandbox(create, timeout=self._timeout("create_v2"))
        note_request(sandbox_id=reply.sandbox.sandbox_id)
        self._learn(reply.sandbox)
        return json_answer(201, rest_json.sandbox_json(reply.sandbox, self._domain))

    async def _list_v1(self, request: PlatformRequest, _: str) -> Answer:
        list_request = rest_requests.list_request(request.query, request.tenant, v2=False)
        listed: list[dict[str, Any]] = []
        while True:
            reply = await self._sandboxes.ListSandboxes(list_request, timeout=self._timeout(""))
            listed.extend(rest_json.listed_sandbox_json(s) for s in reply.sandboxes)
            if not reply.next_page_token:
                return json_answer(200, listed)
            list_request.page_token = reply.next_page_token

    async def _list_v2(self, request: PlatformRequest, _: str) -> Answer:
        list_request = rest_requests.list_request(request.query, request.tenant, v2=True)
        reply = await self._sandboxes.ListSandboxes(list_request, timeout=self._timeout(""))
        headers: tuple[tuple[str, str], ...] = (("x-total-running", str(reply.total_running)),)
        if reply.next_page_token:
            # Absent on the last page: the SDK's has_next is bool(token).
            headers += (("x-next-token", reply.next_page_token),)
        body = [rest_json.listed_sandbox_json(s) for s in reply.sandboxes]
        return json_answer(200, body, headers)

    async def _get(self, request: PlatformRequest, sandbox_id: str) -> Answer:
        reply = await self._sandboxes.GetSandbox(
            pb.GetSandboxRequest(sandbox_id=sandbox_id, tenant=request.tenant),
            timeout=self._timeout(""),
        )
        return json_answer(200, rest_json.sandbox_detail_json(reply.sandbox, self._domain))

    async def _kill(self, request: PlatformRequest, sandbox_id: str) -> Answer:
        with self._settling(sandbox_id) as settling:
            await self._sandboxes.KillSandbox(
                pb.KillSandboxRequest(sandbox_id=sandbox_id, tenant=request.tenant),
                timeout=self._timeout(""),
            )
            self._forget(sandbox_id)
            await settling.until_shows(None)
        return no_content()

    async def _set_timeout(self, request: PlatformRequest, sandbox_id: str) -> Answer:
        body = rest_requests.json_object(request.body)
        timeout = rest_requests.timeout_seconds(body, required=True)
        call = self._sandboxes.SetSandboxTimeout
        set_timeout = pb.SetSandboxTimeoutRequest(
            sandbox_id=sandbox_id, tenant=request.tenant, timeout_seconds=timeout
        )
        await self._changing(sandbox_id, lambda: call(set_timeout, timeout=self._timeout("")))
        return no_content()

    async def _refresh(self, request: PlatformRequest, sandbox_id: str) -> Answer:
        body = rest_requests.json_object(request.body)
        duration = rest_requests.timeout_seconds(
            body, "duration", maximum=rest_requests.MAX_REFRESH_S
        )
        refresh = pb.RefreshSandboxRequest(
            sandbox_id=sandbox_id,
            tenant=request.tenant,
            duration_seconds=duration,  # None: unset
        )
        call = self._sandboxes.RefreshSandbox
        await self._changing(sandbox_id, lambda: call(refresh, timeout=self._timeout("")))
        return no_content()

    async def _connect(self, request: PlatformRequest, sandbox_id: str) -> Answer:
        body = rest_requests.json_object(request.body)
        # v1's ConnectSandbox requires a timeout (every SDK sends one); v2's may leave it out.
        v1 = not request.path.startswith("/v2/")
        connect = pb.ConnectSandboxRequest(
            sandbox_id=sandbox_id,
            tenant=request.tenant,
            timeout_seconds=rest_requests.timeout_seconds(body, required=v1),  # None: unset
        )
        call = self._sandboxes.ConnectSandbox
        reply = await self._changing(
            sandbox_id, lambda: call(connect, timeout=self._timeout("resume"))
        )
        status = 201 if reply.resumed else 200
        return json_answer(status, rest_json.sandbox_json(reply.sandbox, self._domain))

    async def _pause(self, request: PlatformRequest, sandbox_id: str) -> Answer:
        body = rest_requests.json_object(request.body)
        pause = rest_requests.pause_request(body, sandbox_id, request.tenant)
        try:
            await self._changing(
                sandbox_id,
                lambda: self._sandboxes.PauseSandbox(pause, timeout=self._timeout("resume")),
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.FAILED_PRECONDITION:
                # The SDK reads 409 as "already paused" and returns False.
                raise Conflict(error.details() or "sandbox is already paused") from error
            raise
        return no_content()

    async def _resume(self, request: PlatformRequest, sandbox_id: str) -> Answer:
        body = rest_requests.json_object(request.body)
        resume = pb.ResumeSandboxRequest(
            sandbox_id=sandbox_id,
            tenant=request.tenant,
            timeout_seconds=rest_requests.timeout_seconds(body),  # None: unset
        )
        call = self._sandboxes.ResumeSandbox
        reply = await self._changing(
            sandbox_id, lambda: call(resume, timeout=self._timeout("resume"))
        )
        return json_answer(201, rest_json.sandbox_json(reply.sandbox, self._domain))

    async def _metrics(self, request: PlatformRequest, sandbox_id: str) -> Answer:
        metrics = rest_requests.metrics_request(request.query, sandbox_id, request.tenant)
        reply = await self._sandboxes.GetSandboxMetrics(metrics, timeout=self._timeout(""))
        return json_answer(200, [rest_json.metric_json(m) for m in reply.metrics])

    async def _health(self, request: PlatformRequest, _: str) -> Answer:
        """E2B's `GET /health`: the API answers (lifecycle is not asked)."""
        return no_content()

    # --- templates ----------------------------------------------------------------------

    async def _list_templates(self, request: PlatformRequest, _: str) -> Answer:
        rest_requests.check_template_query(request.query)  # v2's `limit`; one page is all
        reply = await self._templates.ListTemplates(
            pb.ListTemplatesRequest(tenant=request.tenant), timeout=self._timeout("")
        )
        return json_answer(200, [rest_json.template_json(t) for t in reply.templates])

    async def _get_template(self, request: PlatformRequest, template_id: str) -> Answer:
        rest_requests.check_template_query(request.query)
        reply = await self._templates.GetTemplate(
            pb.GetTemplateRequest(template_id=template_id, tenant=request.tenant),
            timeout=self._timeout(""),
        )
        return json_answer(200, rest_json.template_with_builds_json(reply.template))
