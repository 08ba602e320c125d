"""picod's auth: an ASGI middleware in front of every route.

Two credentials, each on when configured, both required when both are (defense in
depth: behind the gateway the edge forwards the SDK's X-Access-Token as well as adding
its own JWT):
- the gateway's JWT, `Authorization: Bearer <jwt>`: RS256 only, `exp` and `iat`
  required, and `session_id` must be the sandbox this picod is bound to;
- envd's access token, `X-Access-Token`, compared in constant time.
Both the sandbox id and the token come from the `Binding` (binding.py), read on every
request: a warm-pool picod learns them from `/init` after it started. A picod with JWT auth
that is not bound yet answers nothing but `/health` and `/init`, so no gateway JWT opens
a pod before a sandbox owns it.

`/health` is always open. `/init` is envd's internal route (the edge refuses it on every
sandbox route) and takes either credential: the orchestrator has the access token, the
lifecycle service binding a warm-pool pod has a JWT for the sandbox and maybe the token,
and a retried bind must pass again. On an unbound picod only a JWT whose `session_id` is a
well-formed sandbox id will do (401 otherwise, as for any unusable credential); that id is
handed to the route in `scope["state"]["picod.bind_session"]` and bound there.
`/files` checks the token itself because a signed URL may stand in for it; it learns
whether the header matched from `scope["state"]["picod.access_token_ok"]`.
A bearer token that is present must verify and name this sandbox, even where another
credential would do; so must an access token on `/init`.
USER_HEADER is only believed on a request whose JWT verified: anywhere else it is
removed before the app sees it, so a client cannot pick another user by sending it.
Failures answer 401 JSON that says which credential is missing or wrong, nothing more.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from extproc.core.asgi import ASGIApp, Receive, Scope, Send, send_error
from extproc.core.daemon_auth import credentials
from extproc.core.gateway_jwt import GatewayJwtVerifier, names_sandbox
from extproc.core.ids import is_sandbox_id
from extproc.picod.binding import Binding
from extproc.picod.settings import USER_HEADER, PicodSettings

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/health"})
INIT_PATH = "/init"
SELF_CHECKED_PATHS = frozenset({"/files"})
ACCESS_TOKEN_OK = "picod.access_token_ok"  # noqa: S105 - a scope key, not a secret
BIND_SESSION = "picod.bind_session"

MISSING_BEARER = "unauthorized access: missing bearer token"
INVALID_BEARER = "unauthorized access: invalid bearer token"
BAD_TOKEN = "unauthorized access, please provide a valid access token"  # noqa: S105 - a message
MISSING_EITHER = "unauthorized access: missing bearer token or access token"
NOT_BOUND = "unauthorized access: this sandbox is not bound yet"
NO_SESSION = "unauthorized access: the bearer token names no valid sandbox id"


@dataclass(frozen=True)
class Verdict:
    failure: str | None = None
    jwt_ok: bool = False
    token_ok: bool = False
    # On an unbound picod's /init: the sandbox id the JWT names, for the route to bind.
    bind_session: str | None = None


class AuthMiddleware:
    def __init__(self, app: ASGIApp, settings: PicodSettings, binding: Binding) -> None:
        self._app = app
        self._verifier = (
            GatewayJwtVerifier(settings.jwt_public_key) if settings.jwt_public_key else None
        )
        self._binding = binding
        self._no_auth = settings.no_auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        path: str = scope["path"]
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        jwt_ok = False
        if path not in OPEN_PATHS:
            verdict = self._check(path, headers)
            if verdict.failure is not None:
                await send_error(send, 401, verdict.failure)
                return
            jwt_ok = verdict.jwt_ok
            state = scope.setdefault("state", {})
            state[ACCESS_TOKEN_OK] = verdict.token_ok
            state[BIND_SESSION] = verdict.bind_session
        if not jwt_ok:
            user_header = USER_HEADER.encode()
            scope["headers"] = [(k, v) for k, v in headers if k != user_header]
        await self._app(scope, receive, send)

    def _check(self, path: str, headers: list[tuple[bytes, bytes]]) -> Verdict:
        presented = credentials(headers)
        bearer, token = presented.bearer, presented.access_token
        binding = self._binding
        has_token = binding.access_token is not None
        token_ok = not has_token or (token is not None and binding.token_matches(token))
        if self._verifier is None and not has_token:
            if self._no_auth:
                return Verdict(token_ok=True)
            return Verdict("unauthorized access: no credentials are configured")
        bound = binding.sandbox_id
        claims = None
        if self._verifier is not None and bearer is not None:
            claims = self._verifier.claims(bearer.decode("latin-1"))
            if claims is None:
                return Verdict(INVALID_BEARER)
            if bound is not None and not names_sandbox(claims, bound):
                log.info("rejected JWT: session_id is another sandbox")
                return Verdict(INVALID_BEARER)
        jwt_ok = claims is not None
        if path == INIT_PATH:
            return self._check_init(claims, bound, has_token, token, token_ok)
        if self._verifier is not None:
            if bound is None:
                return Verdict(NOT_BOUND)
            if not jwt_ok:
                return Verdict(MISSING_BEARER, token_ok=token_ok)
        if not token_ok and path not in SELF_CHECKED_PATHS:
            return Verdict(BAD_TOKEN, jwt_ok=jwt_ok)
        return Verdict(jwt_ok=jwt_ok, token_ok=token_ok)

    def _check_init(
        self,
        claims: dict[str, Any] | None,
        bound: str | None,
        has_token: bool,
        token: bytes | None,
        token_ok: bool,
    ) -> Verdict:
        """Either credential; on an unbound picod with JWT auth, a JWT naming a sandbox."""
        jwt_ok = claims is not None
        if token is not None and not token_ok:
            return Verdict(BAD_TOKEN, jwt_ok=jwt_ok)
        if self._verifier is not None and bound is None:
            if claims is None:
                return Verdict(MISSING_BEARER, token_ok=token_ok)
            session = claims.get("session_id")
            if not (isinstance(session, str) and is_sandbox_id(session)):
                log.info("rejected /init: the JWT names no valid sandbox id")
                return Verdict(NO_SESSION, token_ok=token_ok)
            return Verdict(jwt_ok=True, token_ok=token_ok, bind_session=session)
        if jwt_ok or (has_token and token_ok):
            return Verdict(jwt_ok=jwt_ok, token_ok=token_ok)
        if self._verifier is None:
            return Verdict(BAD_TOKEN)
        return Verdict(MISSING_EITHER if has_token else MISSING_BEARER)
