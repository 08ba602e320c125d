"""`envoy.service.auth.v3.Authorization`: the gRPC face of decision.py.

Denials are CheckResponse answers with an HTTP status, a JSON content type and a body; a
gRPC error from here means the edge itself broke (Envoy then answers its status_on_error).
Responses are built once and reused: constant denials forever, an allowed sandbox answer
(which embeds its JWT) until that JWT is due for re-signing. Serialising a prebuilt message
is far cheaper than building one, and gRPC never mutates a response it sends. Metric label
children are resolved once for the same reason (a `labels()` call costs a lock and a dict).

Auto-resume waits inside the Check: the feed's one resume task per sandbox is awaited
(shielded) until `resume_wait_s` after the Check began, which must stay under Envoy's
ext_authz timeout (2 s, extproc/envoy_config/filters.py) with room for queueing; a Check that
runs out answers 503 "being resumed" and the resume carries on for the client's retry. The
wait is an await on a future, so other Checks are served meanwhile.

A signed `/files` URL that names no sandbox (`Locate`) is looked up by its signature
(signed_routing.py: cached, or one budgeted scan shared by concurrent requests), then decided
for the sandbox found exactly as if it had named it. Without a router (Kubernetes mode, where
the edge holds no tokens) it gets a 401 that says what to do instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, Protocol

from cachetools import LRUCache
from envoy.config.core.v3 import base_pb2 as core
from envoy.service.auth.v3 import external_auth_pb2 as auth
from envoy.service.auth.v3 import external_auth_pb2_grpc as auth_grpc

from extproc.core.addresses import HostPort
from extproc.core.api_keys import KeyIndex
from extproc.core.errors import DomainError, ResourceExhausted
from extproc.core.hosts import ENVD_PORT, Target
from extproc.core.request_context import REQUEST_ID_HEADER, clean_request_id, serving_request
from extproc.edge.decision import (
    UNROUTABLE_SIGNATURE,
    UNVERIFIED_SIGNATURE,
    Allow,
    Deny,
    Locate,
    Miss,
    Resume,
    SandboxDecider,
    decide_platform,
    lookup_busy,
    not_found,
    resuming,
)
from extproc.edge.decision import unavailable as unavailable_denial
from extproc.edge.metrics import EdgeMetrics
from extproc.edge.sandbox_directory import Route
from extproc.edge.signed_routing import SignatureRouter
from extproc.edge.tokens import TokenSigner
from extproc.edge.watching import Resumes

log = logging.getLogger(__name__)

_OVERWRITE = core.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
# Most cached allowed responses; about 1 KiB each.
_ALLOWED_CACHE_MAX = 50_000
# google.rpc.Code values (the module ships no type stubs): Envoy only checks "non-zero", the
# code is for its logs and access log.
_UNAUTHENTICATED, _NOT_FOUND, _PERMISSION_DENIED = 16, 5, 7
_GRPC_CODES = {401: _UNAUTHENTICATED, 404: _NOT_FOUND}
MISCONFIGURED = Deny(
    500, '{"code":500,"message":"the gateway route has no authz surface"}', "no_surface"
)
# Seconds from a Check's start that it may wait for an auto-resume: Envoy's ext_authz timeout
# is 2 s, and a Check may have queued before it started. Default 1.5.
RESUME_WAIT_S = 1.5


class _KeySource(Protocol):
    """Anything with a current `index` (the KeyStore, or KeyInformers in Kubernetes mode)."""

    @property
    def index(self) -> KeyIndex: ...


class RouteSource(Protocol):
    """The directory's fallback on a miss, and its resumes: DirectoryFeed or
    ClusterDirectoryFeed."""

    def known_missing(self, sandbox_id: str) -> bool: ...

    async def fetch(self, sandbox_id: str) -> Route | None: ...

    @property
    def resumes(self) -> Resumes: ...


def _resume_failed(sandbox_id: str, error: DomainError) -> Deny:
    """503: the sandbox is paused and its resume failed (the next request tries again)."""
    message = f"sandbox {sandbox_id} is paused and could not be resumed: {error.message}"
    return Deny(503, json.dumps({"code": 503, "message": message}), "resume_failed")


def denied(deny: Deny) -> auth.CheckResponse:
    response = auth.CheckResponse()
    response.status.code = _GRPC_CODES.get(deny.status, _PERMISSION_DENIED)
    denied_response = response.denied_response
    denied_response.status.code = deny.status
    header = denied_response.headers.add()
    header.header.key = "content-type"
    header.header.value = "application/json"
    header.append_action = _OVERWRITE
    denied_response.body = deny.body
    return response


@dataclass(eq=False, repr=False)
class AuthorizationServicer(auth_grpc.AuthorizationServicer):  # type: ignore[misc]
    keys: _KeySource
    decider: SandboxDecider
    feed: RouteSource
    signer: TokenSigner
    metrics: EdgeMetrics
    _: KW_ONLY
    resume_wait_s: float = RESUME_WAIT_S
    # Finds the sandbox of a signed URL that names none; None where tokens are not held.
    signatures: SignatureRouter | None = None
    # Denials are a handful of constants plus one 502 per unknown id: an LRU keeps the
    # constants hot however many distinct ids a client tries.
    _denials: LRUCache[Deny, auth.CheckResponse] = field(
        init=False, default_factory=lambda: LRUCache(maxsize=4096)
    )
    # A platform allow depends only on (tenant, key hash); revocation is decided earlier.
    _platform_allowed: LRUCache[tuple[str, str], auth.CheckResponse] = field(
        init=False, default_factory=lambda: LRUCache(maxsize=4096)
    )
    # (sandbox_id, upstream_host, user) -> (response, unix time it stops being reusable)
    _allowed_cache: dict[tuple[str, str, str], tuple[auth.CheckResponse, float]] = field(
        init=False, default_factory=dict
    )
    _observe: dict[str, Any] = field(init=False)
    _counters: dict[tuple[str, str], Any] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._observe = {
            surface: self.metrics.check_seconds.labels(surface)
            for surface in ("platform", "sandbox")
        }

    def _denied(self, deny: Deny) -> auth.CheckResponse:
        response = self._denials.get(deny)
        if response is None:
            response = denied(deny)
            self._denials[deny] = response
        return response

    async def Check(self, request: auth.CheckRequest, context: Any) -> auth.CheckResponse:
        started = time.perf_counter()
        attributes = request.attributes
        surface = attributes.context_extensions.get("surface", "")
        http = attributes.request.http
        headers = http.headers
        decision: Allow | Deny | Miss | Resume | Locate
        if surface == "sandbox":
            decision = self.decider.decide(http.host, headers, http.method, http.path)
            if isinstance(decision, Locate):
                decision = await self._after_locate(decision, http, headers)
            if isinstance(decision, Miss):
                decision = await self._after_miss(decision, http, headers, started)
            if isinstance(decision, Resume):
                with serving_request(headers, decision.target.sandbox_id):  # the task copies it
                    task = self.feed.resumes.start(decision.route)
                decision = await self._after_resume(task, decision, http, headers, started)
        elif surface == "platform":
            decision = decide_platform(self.keys.index, headers.get("x-api-key"))
        else:
            log.error("ext_authz request without a known 'surface' context extension: %r", surface)
            decision = MISCONFIGURED
        if isinstance(decision, Allow):
            response = self._allowed(decision, surface)
            outcome = "allow"
        else:
            assert not isinstance(decision, Miss | Resume | Locate)  # followed up above
            response = self._denied(decision)
            outcome = decision.reason
            if log.isEnabledFor(logging.DEBUG):  # off by default: a denial can be a flood
                log.debug(
                    "denied a %s request for %s: %d %s",
                    surface,
                    http.host,
                    decision.status,
                    decision.reason,
                    extra={"request_id": clean_request_id(headers.get(REQUEST_ID_HEADER))},
                )
        counter = self._counters.get((surface, outcome))
        if counter is None:
            counter = self.metrics.decisions.labels(surface or "none", outcome)
            self._counters[(surface, outcome)] = counter
        counter.inc()
        observe = self._observe.get(surface)
        if observe is not None:
            observe.observe(time.perf_counter() - started)
        return response

    async def _after_locate(
        self, locate: Locate, http: Any, headers: Any
    ) -> Allow | Deny | Miss | Resume:
        """Find the sandbox a signed URL is for, then decide as if the URL had named it."""
        if self.signatures is None:
            return UNROUTABLE_SIGNATURE
        try:
            sandbox_id = await self.signatures.find(locate.params, locate.operation)
        except ResourceExhausted as error:
            return lookup_busy(error.message)
        if sandbox_id is None:
            return UNVERIFIED_SIGNATURE
        target = Target(sandbox_id, ENVD_PORT)
        return self.decider.decide_target(target, headers, http.method, http.path)

    async def _after_miss(
        self, miss: Miss, http: Any, headers: Any, started: float
    ) -> Allow | Deny | Resume:
        sandbox_id = miss.target.sandbox_id
        in_flight = self.feed.resumes.get(sandbox_id)
        if in_flight is not None:
            # Resumed a moment ago, its pod not Ready yet: wait with the resume, not the miss.
            return await self._after_resume(in_flight, miss, http, headers, started)
        if self.feed.known_missing(sandbox_id):
            return not_found(sandbox_id)
        try:
            with serving_request(headers, sandbox_id):
                route = await self.feed.fetch(sandbox_id)
        except DomainError as error:
            return unavailable_denial(error.message)
        if route is None:
            return not_found(sandbox_id)
        decision = self.decider.decide_target(miss.target, headers, http.method, http.path, route)
        assert not isinstance(decision, Miss)
        return decision

    async def _after_resume(
        self,
        task: asyncio.Task[Route | None],
        asked: Miss | Resume,
        http: Any,
        headers: Any,
        started: float,
    ) -> Allow | Deny:
        """Wait for the resume `task` within this Check's budget, then decide again."""
        sandbox_id = asked.target.sandbox_id
        remaining = self.resume_wait_s - (time.perf_counter() - started)
        try:
            async with asyncio.timeout(max(remaining, 0.0)):
                route = await asyncio.shield(task)
        except TimeoutError:
            return resuming(sandbox_id)
        except DomainError as error:
            return _resume_failed(sandbox_id, error)
        if route is None:
            return not_found(sandbox_id)
        decision = self.decider.decide_target(asked.target, headers, http.method, http.path, route)
        if isinstance(decision, Miss | Resume):
            return resuming(sandbox_id)  # still not running: never a second resume per Check
        return decision

    def _allowed(self, allow: Allow, surface: str) -> auth.CheckResponse:
        if surface != "platform":
            key = (allow.sandbox_id, allow.upstream_host, allow.user)
            cached = self._allowed_cache.get(key)
            if cached is not None and time.time() < cached[1]:
                return cached[0]
            token, reusable_until = self.signer.token_until(allow.sandbox_id)
            response = self._build_allowed(allow, surface, token)
            if len(self._allowed_cache) >= _ALLOWED_CACHE_MAX:
                self._allowed_cache.clear()  # rare; rebuilding costs one build per sandbox
            self._allowed_cache[key] = (response, reusable_until)
            return response
        platform_key = (allow.tenant, allow.key_hash)
        response = self._platform_allowed.get(platform_key)
        if response is None:
            response = self._build_allowed(allow, surface, "")
            self._platform_allowed[platform_key] = response
        return response

    def _build_allowed(self, allow: Allow, surface: str, token: str) -> auth.CheckResponse:
        response = auth.CheckResponse()
        ok = response.ok_response
        ok.headers_to_remove.append("x-api-key")
        metadata = response.dynamic_metadata.fields
        metadata["tenant"].string_value = allow.tenant
        if surface == "platform":
            metadata["key_hash"].string_value = allow.key_hash
            return response
        # The traffic token is the gateway's to check, not the sandbox's servers' to see.
        ok.headers_to_remove.append("e2b-traffic-access-token")
        header = ok.headers.add()
        header.header.key = "authorization"
        header.header.value = "Bearer " + token
        header.append_action = _OVERWRITE
        if allow.user:
            header = ok.headers.add()
            header.header.key = "x-agentcube-e2b-user"
            header.header.value = allow.user
            header.append_action = _OVERWRITE
        metadata["upstream_host"].string_value = allow.upstream_host
        metadata["sandbox_id"].string_value = allow.sandbox_id
        # Envoy's "port is not open" reply names the port; it reads it from here.
        metadata["port"].number_value = HostPort.parse(allow.upstream_host).port
        return response
