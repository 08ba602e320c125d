"""Who may run code: the gateway's JWT, or E2B's access token, or nobody without --no-auth.

Either credential is enough, unlike picod where both are required when both are
configured: the SDK sends `X-Access-Token` on `/execute` only, never on the context calls,
so behind the gateway those carry just the gateway's JWT. A bearer token that is present
but does not verify is refused even when the access token matches (a forged or stale JWT is
never papered over). The JWT check is RS256 only, `exp` and `iat` required, and
`session_id` must be this sandbox when its id is known. It is written here rather than
imported from picod because surfaces do not import each other.
Failures answer 401 JSON that says which credential is wrong, nothing more.
"""

from __future__ import annotations

import hmac
import logging

from extproc.core.errors import Unauthenticated
from extproc.core.gateway_jwt import GatewayJwtVerifier
from extproc.interpreter.settings import InterpreterSettings

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/health"})


class Authenticator:
    def __init__(self, settings: InterpreterSettings) -> None:
        self._verifier = (
            GatewayJwtVerifier(settings.jwt_public_key, settings.sandbox_id)
            if settings.jwt_public_key
            else None
        )
        self._token = settings.access_token.encode() if settings.access_token else None
        self._open = settings.no_auth and self._verifier is None and self._token is None

    def check(self, path: str, headers: list[tuple[bytes, bytes]]) -> None:
        """Return if the request may pass, else raise Unauthenticated."""
        if path in OPEN_PATHS or self._open:
            return
        if self._verifier is None and self._token is None:
            raise Unauthenticated("unauthorized access: no credentials are configured")
        bearer = token = None
        for name, value in headers:
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                bearer = value[7:]
            elif name == b"x-access-token":
                token = value
        if bearer is not None and self._verifier is not None:
            if not self._verify(bearer.decode("latin-1")):
                raise Unauthenticated("unauthorized access: invalid bearer token")
            return
        if (
            self._token is not None
            and token is not None
            and hmac.compare_digest(token, self._token)
        ):
            return
        if self._token is not None and token is not None:
            raise Unauthenticated("unauthorized access, please provide a valid access token")
        raise Unauthenticated("unauthorized access: missing credentials")

    def _verify(self, token: str) -> bool:
        return self._verifier is not None and self._verifier.verify(token)
