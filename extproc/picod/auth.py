"""picod's auth: an ASGI middleware in front of every route.

Two credentials, each on when configured, both required when both are (defense in
depth: behind the gateway the edge forwards the SDK's X-Access-Token as well as adding
its own JWT):
- the gateway's JWT, `Authorization: Bearer <jwt>`: RS256 only, `exp` and `iat`
  required, and `session_id` must be this sandbox when the sandbox id is known;
- envd's access token, `X-Access-Token`, compared in constant time.
`/health` is always open. `/init` is envd's internal route: the orchestrator has the
access token but no JWT, so only the token is checked there. `/files` checks the token
itself because a signed URL may stand in for it; it learns whether the header matched
from `scope["state"]["picod.access_token_ok"]`.
USER_HEADER is only believed on a request whose JWT verified: anywhere else it is
removed before the app sees it, so a client cannot pick another user by sending it.
Failures answer 401 JSON that says which credential is missing or wrong, nothing more.
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import Any

from extproc.core.gateway_jwt import GatewayJwtVerifier
from extproc.picod.settings import USER_HEADER, PicodSettings

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/health"})
TOKEN_ONLY_PATHS = frozenset({"/init"})
SELF_CHECKED_PATHS = frozenset({"/files"})
ACCESS_TOKEN_OK = "picod.access_token_ok"  # noqa: S105 - a scope key, not a secret

Scope = dict[str, Any]
ASGIApp = Any


class AuthMiddleware:
    def __init__(self, app: ASGIApp, settings: PicodSettings) -> None:
        self._app = app
        self._verifier = (
            GatewayJwtVerifier(settings.jwt_public_key, settings.sandbox_id)
            if settings.jwt_public_key
            else None
        )
        self._token = settings.access_token.encode() if settings.access_token else None
        self._no_auth = settings.no_auth

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        path: str = scope["path"]
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        jwt_ok = False
        if path not in OPEN_PATHS:
            failure, jwt_ok, token_ok = self._check(path, headers)
            if failure is not None:
                await _unauthorized(send, failure)
                return
            scope.setdefault("state", {})[ACCESS_TOKEN_OK] = token_ok
        if not jwt_ok:
            user_header = USER_HEADER.encode()
            scope["headers"] = [(k, v) for k, v in headers if k != user_header]
        await self._app(scope, receive, send)

    def _check(
        self, path: str, headers: list[tuple[bytes, bytes]]
    ) -> tuple[str | None, bool, bool]:
        """(failure message or None, JWT verified, access token matched)."""
        bearer = token = None
        for name, value in headers:
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                bearer = value[7:]
            elif name == b"x-access-token":
                token = value
        token_ok = self._token is None or (
            token is not None and hmac.compare_digest(token, self._token)
        )
        if self._verifier is None and self._token is None:
            if self._no_auth:
                return None, False, True
            return "unauthorized access: no credentials are configured", False, False
        jwt_ok = False
        # /init skips the JWT only where a token guards it instead.
        skip_jwt = path in TOKEN_ONLY_PATHS and self._token is not None
        if self._verifier is not None and not skip_jwt:
            if bearer is None:
                return "unauthorized access: missing bearer token", False, token_ok
            if not self._verify(bearer.decode("latin-1")):
                return "unauthorized access: invalid bearer token", False, token_ok
            jwt_ok = True
        if not token_ok and path not in SELF_CHECKED_PATHS:
            return "unauthorized access, please provide a valid access token", jwt_ok, False
        return None, jwt_ok, token_ok

    def _verify(self, token: str) -> bool:
        return self._verifier is not None and self._verifier.verify(token)


async def _unauthorized(send: Any, message: str) -> None:
    body = json.dumps({"code": 401, "message": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
