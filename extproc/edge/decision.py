"""The ext_authz decision, free of gRPC: request facts in, Allow / Deny / Miss / Resume /
Locate out.

Every input comes from precomputed state (the key index, the routing directory); nothing
here awaits. A directory miss is returned as `Miss` so the adapter can do its one fallback
read and decide again with the route it got. Denial bodies follow E2B: platform errors are
`{"code","message"}`, a dead sandbox is the client-proxy's 502 "was not found" (the SDK keys
on that phrase), a bad envd token is envd's own 401, and a missing or wrong
E2B-Traffic-Access-Token on a sandbox without public traffic is the client-proxy's 403.

A paused sandbox is "not found" too, as E2B answers, unless it was created with autoResume:
then a request that passes every check the edge can make is returned as `Resume`, and the
adapter resumes the sandbox and decides again with the running route. Checking first means
a request that would be refused anyway never wakes a sandbox.

Signed `/files` URLs are verified here when the route holds the envd token (local mode). In
Kubernetes mode the edge holds only the token's sha256, which cannot verify a signature
keyed with the token, so the edge checks what is public (one of each parameter, a
well-formed signature, not expired) and lets picod, which holds the token, verify the HMAC
(extproc/picod/files.py, the same core/signed_urls.py rule).

A signed `/files` URL built with `E2B_SANDBOX_URL` names no sandbox at all: it reaches the
shared host (an IP literal, `localhost` or `sandbox.<domain>`, as header routing) without
routing headers. Its public checks are made here, then it is returned as `Locate`: the adapter
finds the sandbox whose token verifies the signature (signed_routing.py) and decides again for
that sandbox, through the same checks as a URL that named it.

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
import ipaddress
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
from extproc.edge.sandbox_directory import Directory, Route

# envd routes only the control plane may call; the proxy hides them (E2B answers 404).
INTERNAL_ENVD_PATHS = frozenset(
    ("/init", "/freeze", "/unfreeze", "/collapse", "/fsfreeze", "/fsthaw")
)
# The SDK never sends a user name outside this POSIX-ish shape; anything else (e.g. CR/LF)
# must not reach an upstream header.
_USER_RE = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")
# What signed_urls.sign produces: the prefix, then a SHA-256 in unpadded standard base64.
_SIGNATURE_RE = re.compile(re.escape(signed_urls.PREFIX) + r"[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]")


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


@dataclass(frozen=True, slots=True)
class Resume:
    """The request may reach `route`'s sandbox, which is paused with autoResume."""

    target: Target
    route: Route


@dataclass(frozen=True, slots=True)
class Locate:
    """A signed `/files` URL naming no sandbox, its public checks passed: find the sandbox
    whose token verifies `params` for `operation`, then `decide_target` for it."""

    params: dict[str, str]
    operation: signed_urls.Operation


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
# A signed URL naming no sandbox that no sandbox's token verifies (or several do): envd's
# answer to a wrong signature, so it tells nothing about which sandboxes exist.
UNVERIFIED_SIGNATURE = _error(401, signed_urls.BAD_SIGNATURE, "bad_signature")
# Kubernetes mode: the edge holds only token digests and cannot find the sandbox.
UNROUTABLE_SIGNATURE = _error(
    401,
    "unauthorized access: this gateway cannot tell which sandbox a signed URL without a "
    "sandbox id is for (in Kubernetes mode it holds no sandbox tokens). Use the sandbox's "
    "own host, 49983-<sandboxID>.<domain>: set E2B_DOMAIN and leave E2B_SANDBOX_URL unset",
    "signed_url_unroutable",
)
_KEY_DENIALS = {KeyStatus.REVOKED: REVOKED_KEY, KeyStatus.EXPIRED: EXPIRED_KEY}


# Memoised: a client polling a dead id is answered without re-encoding JSON (which was a
# third of a cached 502's cost). Deny is frozen, so sharing one is safe; bounded either way.
@functools.lru_cache(maxsize=4096)
def not_found(sandbox_id: str) -> Deny:
    body = {"sandboxId": sandbox_id, "message": "The sandbox was not found", "code": 502}
    return Deny(502, json.dumps(body), "not_found")


@functools.lru_cache(maxsize=4096)
def port_not_open(sandbox_id: str, port: int) -> Deny:
    """E2B client-proxy's answer for a port nothing listens on (what Envoy answers for a
    refused connection too): here, a port the sandbox's template does not open."""
    body = {"sandboxId": sandbox_id, "message": "The sandbox is running but port is not open",
            "port": port, "code": 502}  # fmt: skip
    return Deny(502, json.dumps(body), "port_not_open")


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


def lookup_busy(message: str) -> Deny:
    """429: the budget for finding signed URLs' sandboxes is spent for now."""
    return _error(429, message, "signed_lookup_busy")


def resuming(sandbox_id: str) -> Deny:
    """503 for a paused sandbox whose resume did not finish within the request's budget."""
    message = f"sandbox {sandbox_id} is paused and being resumed; retry the request shortly"
    return _error(503, message, "resuming")


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


def check_signature_shape(params: Mapping[str, str], now: float) -> None:
    """The checks of a signed URL that need no token: a signature of the right form is
    present and `signature_expiration`, if any, is well-formed and not past. Raises
    Unauthenticated with envd's messages, as `signed_urls.verify` would."""
    signature = params.get("signature")
    if not signature:
        raise Unauthenticated(signed_urls.NO_CREDENTIALS)
    expires_at = signed_urls.parse_expiration(params.get("signature_expiration"))
    if expires_at is not None and expires_at < now:
        raise Unauthenticated(signed_urls.EXPIRED)
    if not _SIGNATURE_RE.fullmatch(signature):
        raise Unauthenticated(signed_urls.BAD_SIGNATURE)


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
    ) -> Allow | Deny | Miss | Resume | Locate:
        """`headers` are lowercase-keyed; `route` is the fallback read's (or a resume's)
        answer after a Miss (or a Resume)."""
        header_id, header_port = headers.get("e2b-sandbox-id"), headers.get("e2b-sandbox-port")
        # The path first: a host-routed request (the hot path) pays one prefix test.
        if path.startswith("/files?") and header_id is None and header_port is None:
            located = self._signed_without_id(host, method, path)
            if located is not None:
                return located
        target = self.target(host, header_id, header_port)
        if isinstance(target, Deny):
            return target
        return self.decide_target(target, headers, method, path, route)

    def is_shared_host(self, host: str) -> bool:
        """Whether `host` is one E2B header-routes on: an IP literal, localhost, or
        `sandbox.<domain>` (any port)."""
        host = host.lower()
        if host.startswith("["):
            end = host.find("]")
            if end < 0:
                return False
            name = host[1:end]
        else:
            name = host if host.count(":") > 1 else host.partition(":")[0]
        if name in ("localhost", self._shared_host):
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True

    def _signed_without_id(self, host: str, method: str, path: str) -> Locate | Deny | None:
        """A signed `/files` URL's public checks, when the request is one on the shared host;
        else None."""
        if method not in ("GET", "POST") or not self.is_shared_host(host):
            return None
        query = path.partition("?")[2]
        try:
            params = signed_urls.parse_query(query)
            check_signature_shape(params, self._clock())
        except InvalidArgument as error:
            return _error(400, error.message, "bad_query")
        except Unauthenticated as error:
            return _error(401, error.message, "bad_signature")
        return Locate(params, signed_urls.operation_of(method))

    def decide_target(
        self,
        target: Target,
        headers: Mapping[str, str],
        method: str,
        path: str,
        route: Route | None = None,
    ) -> Allow | Deny | Miss | Resume:
        """`decide` for a known target (parsed, or found from a signed URL)."""
        path_only, _, query = path.partition("?")
        envd = target.port == ENVD_PORT
        if envd and normalized_path(path_only) in INTERNAL_ENVD_PATHS:
            return INTERNAL_PATH
        if route is None:
            route = self._directory.get(target.sandbox_id)
            if route is None:
                return Miss(target)
        if route.paused:
            # A paused sandbox's end time may be past (it paused on timeout): not checked.
            if not route.auto_resume:
                return not_found(target.sandbox_id)
        elif not route.running or (route.end_at and route.end_at <= self._clock()):
            return not_found(target.sandbox_id)
        if route.open_ports is not None and target.port not in route.open_ports:
            return port_not_open(route.sandbox_id, target.port)
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
        if route.paused:
            return Resume(target, route)
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
            elif hmac.compare_digest(
                token.encode("utf-8", "surrogatepass"), route.envd_access_token.encode()
            ):
                return None
        if method == "GET" and path == "/health":
            return None
        if path == "/files" and method in ("GET", "POST"):
            try:
                params = signed_urls.parse_query(query)
                if route.envd_access_token:
                    signed_urls.verify(
                        params,
                        signed_urls.operation_of(method),
                        route.envd_access_token,
                        self._clock(),
                    )
                else:
                    # Only the digest is known here: picod verifies the HMAC itself.
                    check_signature_shape(params, self._clock())
            except InvalidArgument as error:
                return _error(400, error.message, "bad_query")
            except Unauthenticated as error:
                return _error(401, error.message, "bad_signature")
            return None
        return BAD_TOKEN
