"""The ext_authz decision, free of gRPC: request facts in, Allow / Deny / Miss out.

Every input comes from precomputed state (the key index, the routing directory); nothing
here awaits. A directory miss is returned as `Miss` so the adapter can do its one fallback
read and decide again with the route it got. Denial bodies follow E2B: platform errors are
`{"code","message"}`, a dead sandbox is the client-proxy's 502 "was not found" (the SDK keys
on that phrase), a bad envd token is envd's own 401, and a missing or wrong
E2B-Traffic-Access-Token on a sandbox without public traffic is the client-proxy's 403.

Internal envd routes are refused by the path a server could come to route, not by its
spelling: picod's server (uvicorn) percent-decodes the whole path before routing, and an
Envoy with `normalize_path`/`merge_slashes` turns `//init` or `/a/../init` into `/init`.
So the path is decoded, backslashes read as slashes, slashes merged and dot segments
removed before it is compared. Only that deny-list uses the normalised path; what is let
through without a token (`GET /health`, signed `/files`) matches the raw path, so an odd
spelling of an open route is refused rather than an odd spelling of a closed one allowed.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import unquote

from extproc.core import signed_urls
from extproc.core.api_keys import KeyIndex, KeyStatus
from extproc.core.errors import InvalidArgument, Unauthenticated
from extproc.core.hosts import ENVD_PORT, Target, parse_target
from extproc.edge.routes import Directory, Route

# envd routes only the control plane may call; the proxy hides them (E2B answers 404).
INTERNAL_ENVD_PATHS = frozenset(
    ("/init", "/freeze", "/unfreeze", "/collapse", "/fsfreeze", "/fsthaw")
)
# The SDK never sends a user name outside this POSIX-ish shape; anything else (e.g. CR/LF)
# must not reach an upstream header.
_USER_RE = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")


@dataclass(frozen=True, slots=True)
class Allow:
    tenant: str
    # Platform only: a prefix of the key hash, for logs.
    key_hash: str = ""
    # Sandbox only:
    sandbox_id: str = ""
    upstream_host: str = ""
    user: str = ""


@dataclass(frozen=True, slots=True)
class Deny:
    status: int
    body: str
    reason: str  # metrics label


@dataclass(frozen=True, slots=True)
class Miss:
    target: Target


def _error(status: int, message: str, reason: str) -> Deny:
    return Deny(status, json.dumps({"code": status, "message": message}), reason)


MISSING_KEY = _error(401, "missing API key: set the X-API-Key header", "missing_key")
INVALID_KEY = _error(401, "invalid API key", "invalid_key")
REVOKED_KEY = _error(401, "API key has been revoked", "revoked_key")
EXPIRED_KEY = _error(401, "API key has expired", "expired_key")
INTERNAL_PATH = _error(404, "not found", "internal_path")
BAD_TOKEN = _error(
    401, "unauthorized access, please provide a valid access token", "bad_access_token"
)
BAD_USER = _error(401, "invalid user in the Authorization header", "bad_user")
_KEY_DENIALS = {KeyStatus.REVOKED: REVOKED_KEY, KeyStatus.EXPIRED: EXPIRED_KEY}


# Memoised: a client polling a dead id is answered without re-encoding JSON (which was a
# third of a cached 502's cost). Deny is frozen, so sharing one is safe; bounded either way.
@functools.lru_cache(maxsize=4096)
def not_found(sandbox_id: str) -> Deny:
    body = {"sandboxId": sandbox_id, "message": "The sandbox was not found", "code": 502}
    return Deny(502, json.dumps(body), "not_found")


_TRAFFIC_MESSAGE = (
    "Sandbox is secured with traffic access token. Token header 'e2b-traffic-access-token' is {}"
)


@functools.lru_cache(maxsize=4096)
def traffic_denied(sandbox_id: str, missing: bool) -> Deny:
    """E2B client-proxy's answer when `network.allowPublicTraffic` is off (403, JSON)."""
    message = _TRAFFIC_MESSAGE.format("missing" if missing else "invalid")
    body = {"sandboxId": sandbox_id, "message": message, "code": 403}
    return Deny(403, json.dumps(body), "missing_traffic_token" if missing else "bad_traffic_token")


def unavailable(message: str) -> Deny:
    return _error(503, message, "directory_unavailable")


def normalized_path(path: str) -> str:
    """The path part of a request target as a server could come to route it.

    Query and fragment dropped, every percent-escape decoded (uvicorn decodes them all, not
    only the unreserved ones), backslashes read as slashes, runs of slashes merged, and
    RFC 3986 dot segments removed. A trailing slash stays: `/init/` is not `/init`.
    """
    path = path.partition("?")[0]
    if "#" in path:
        path = path.partition("#")[0]
    # Already normal (nearly every request): a few substring tests, no allocation.
    if "%" not in path and "/." not in path and "//" not in path and "\\" not in path:
        return path
    path = unquote(path, errors="replace").replace("\\", "/")
    segments = re.sub("/{2,}", "/", path).split("/")
    kept: list[str] = []
    for segment in segments:
        if segment == "..":
            if len(kept) > 1:
                kept.pop()
        elif segment != ".":
            kept.append(segment)
    if segments[-1] in (".", ".."):
        kept.append("")  # "/a/." is the directory "/a/"
    return "/".join(kept) or "/"


def decide_platform(index: KeyIndex, api_key: str | None) -> Allow | Deny:
    if not api_key:
        return MISSING_KEY
    key_hash = hashlib.sha256(api_key.encode("utf-8", "surrogatepass")).hexdigest()
    entry = index.entries.get(key_hash)
    if entry is None:
        return INVALID_KEY
    if entry.status is not KeyStatus.VALID:
        return _KEY_DENIALS[entry.status]
    return Allow(tenant=entry.namespace, key_hash=key_hash[:12])


def _basic_user(authorization: str | None) -> str | Deny:
    """The user of `Authorization: Basic base64(user:)`, "" when absent or not Basic."""
    if not authorization or authorization[:6].lower() != "basic ":
        return ""
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return BAD_USER
    user = decoded.split(":", 1)[0]
    if not user:
        return ""
    return user if _USER_RE.fullmatch(user) else BAD_USER


class SandboxDecider:
    """Decides sandbox-surface requests from the directory; see `decide`."""

    def __init__(
        self, directory: Directory, domain: str, clock: Callable[[], float] = time.time
    ) -> None:
        self._directory = directory
        self._shared_host = f"sandbox.{domain}".lower()
        self._clock = clock

    def target(self, host: str, header_id: str | None, header_port: str | None) -> Target | Deny:
        try:
            return parse_target(host, header_id, header_port, self._shared_host)
        except InvalidArgument as error:
            return _error(400, error.message, "bad_target")

    def decide(
        self,
        host: str,
        headers: Mapping[str, str],
        method: str,
        path: str,
        route: Route | None = None,
    ) -> Allow | Deny | Miss:
        """`headers` are lowercase-keyed; `route` is the fallback read's answer after a Miss."""
        target = self.target(host, headers.get("e2b-sandbox-id"), headers.get("e2b-sandbox-port"))
        if isinstance(target, Deny):
            return target
        path_only, _, query = path.partition("?")
        envd = target.port == ENVD_PORT
        if envd and normalized_path(path_only) in INTERNAL_ENVD_PATHS:
            return INTERNAL_PATH
        if route is None:
            route = self._directory.get(target.sandbox_id)
            if route is None:
                return Miss(target)
        if not route.running or (route.end_at and route.end_at <= self._clock()):
            return not_found(target.sandbox_id)
        if envd and route.secure:
            denial = self._check_envd_token(route, headers, method, path_only, query)
            if denial is not None:
                return denial
        elif not envd and not route.public_traffic:
            token = headers.get("e2b-traffic-access-token")
            if not token:
                return traffic_denied(route.sandbox_id, missing=True)
            # An empty expected token (never minted) matches nothing: fail closed.
            expected = route.traffic_access_token.encode()
            given = token.encode("utf-8", "surrogatepass")
            if not expected or not hmac.compare_digest(given, expected):
                return traffic_denied(route.sandbox_id, missing=False)
        user = _basic_user(headers.get("authorization"))
        if isinstance(user, Deny):
            return user
        return Allow(
            tenant=route.tenant,
            sandbox_id=route.sandbox_id,
            upstream_host=f"{route.endpoint_host}:{target.port}",
            user=user,
        )

    def _check_envd_token(
        self, route: Route, headers: Mapping[str, str], method: str, path: str, query: str
    ) -> Deny | None:
        token = headers.get("x-access-token")
        if token is not None:
            if route.access_token_sha256:
                # Kubernetes mode: only the digest is known; hashing first keeps it constant-time.
                digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
                if hmac.compare_digest(digest, route.access_token_sha256):
                    return None
            elif hmac.compare_digest(token.encode(), route.envd_access_token.encode()):
                return None
        if method == "GET" and path == "/health":
            return None
        if path == "/files" and method in ("GET", "POST"):
            if not route.envd_access_token:
                # A signature is keyed with the token itself, which a digest cannot verify.
                return _error(
                    401, "unauthorized access, signed URLs are not supported here", "bad_signature"
                )
            try:
                params = signed_urls.parse_query(query)
                signed_urls.verify(
                    params,
                    signed_urls.operation_of(method),
                    route.envd_access_token,
                    self._clock(),
                )
            except InvalidArgument as error:
                return _error(400, error.message, "bad_query")
            except Unauthenticated as error:
                return _error(401, error.message, "bad_signature")
            return None
        return BAD_TOKEN
