"""The E2B platform REST API: a request, resolved to its operation, is one handler call.

Handlers (sandbox_api, template_api, volume_api) receive the tenant ext_authz established
(never a header) and pass it to lifecycle, which hides other tenants' sandboxes as
NOT_FOUND. Failures go through rest_wire's one table; operations that are not safe to repeat
(their row in rest_routes.OPERATIONS says so) answer `Should-Retry: false`, since the SDK
otherwise retries 5xx/429 POSTs.

Rate limit: every platform request first takes a token from its API key's bucket
(`requestsPerSecond` of the key's namespace, core/quotas.py), here rather than in Envoy's
local rate limit because the per-namespace numbers live in the key index the edge already
holds and reloads; it costs about a microsecond of CPU (tests/bench/quota_bench.py). Over the
limit is E2B's 429 with `Retry-After: 1`, which the SDK's retry policy honours.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

import grpc

from extproc._gen.agentcube.e2b.v1 import lifecycle_pb2 as pb
from extproc.core.api_keys import hash_api_key
from extproc.core.errors import DomainError, NotFound
from extproc.core.hosts import is_sandbox_id
from extproc.core.quotas import DEFAULT_TABLE, QuotaTable, RateLimiter
from extproc.core.request_context import note_request
from extproc.edge.platform_operation import Call, PlatformContext, PlatformRequest
from extproc.edge.rest_routes import NoRoute, resolve
from extproc.edge.rest_wire import Answer, error_answer, from_grpc, json_answer
from extproc.edge.watching import Settling, unsettled

__all__ = ["PlatformApi", "PlatformRequest"]

log = logging.getLogger(__name__)


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
        # The live quota table and a monotonic clock in seconds for the per-key buckets.
        self._quotas = quotas
        self._clock = clock
        self._rates = RateLimiter()
        self._context = PlatformContext.on(channel, domain, quotas, learn, forget, settling)

    async def handle(self, request: PlatformRequest) -> tuple[str, Answer]:
        """(operation name for metrics, answer). Never raises for a request's fault."""
        limited = self._rate_limited(request)
        if limited is not None:
            return "rate_limited", limited
        call = resolve(request.method, request.path)
        if isinstance(call, NoRoute):
            body = {"code": call.status, "message": call.message}
            allow = (("allow", ", ".join(call.allowed)),) if call.allowed else ()
            return "none", json_answer(call.status, body, allow)
        operation = call.operation
        retryable = operation.retryable or bool(request.headers.get("idempotency-key"))
        try:
            _check_sandbox_id(call)
            return operation.name, await operation.handler(self._context, request, call)
        except grpc.aio.AioRpcError as error:
            return operation.name, error_answer(from_grpc(error), retryable)
        except DomainError as error:
            return operation.name, error_answer(error, retryable)
        except Exception as error:  # the answer must still be E2B JSON; keep the traceback
            log.exception("platform operation %s failed", operation.name)
            return operation.name, error_answer(error, retryable)

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


def _check_sandbox_id(call: Call) -> None:
    """A sandbox id no sandbox can have is NotFound before lifecycle is asked."""
    if not call.operation.names_sandbox:
        return
    if not is_sandbox_id(call.resource_id):
        # No sandbox can have this id (hosts split on '-'), so it does not exist.
        raise NotFound(f"sandbox {call.resource_id!r} not found")
    note_request(sandbox_id=call.resource_id)
