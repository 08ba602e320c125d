"""Who may run code: E2B's access token and the gateway's JWT, or nobody without --no-auth.

Running code (`/execute`, and any route not listed below) needs every credential that is
configured: `X-Access-Token` equal to the sandbox's access token (compared in constant
time) when the interpreter has one, which makes it a secure sandbox, and the gateway's
JWT when a JWT key is configured. The gateway attaches a valid JWT to every request it
routes, so the JWT alone only proves the request came through the gateway, not who sent
it: anyone who knows a sandbox id could otherwise run code in it. The code-interpreter
SDK sends `X-Access-Token` on `/execute`.

The context routes (`/contexts...`) take either credential: the SDK never sends the token
there (`create_code_context`, `list_code_contexts`, `remove_code_context` and
`restart_code_context` send only the sandbox id and port headers), so behind the gateway
they carry just the JWT, and the lifecycle service checks a kernel is up with the token
alone. They manage kernels but run no code given in the request.

Anywhere, a credential that is present must be right: a bearer token that does not verify,
or an access token that does not match, is refused even when the other one is good. The
JWT check is RS256 only, `exp` and `iat` required, and `session_id` must be this sandbox.

Which sandbox that is: `--sandbox-id` when given (local mode, cold Kubernetes pods), and the
access token is `--access-token`. An interpreter with a JWT key but no sandbox id (a
warm-pool pod, started before its sandbox existed) learns both from picod's binding file
(binding.py); until that file names a sandbox it refuses every request but `/health`, since
any gateway JWT would do otherwise.

`/health` is always open. Failures answer 401 JSON `{"code": 401, "message": ...}` (the SDK
shows the body in its SandboxException) that says which credential is missing or wrong, or
that the sandbox is not bound yet, nothing more.
"""

from __future__ import annotations

import hmac
import logging
import re

from extproc.core.daemon_auth import credentials
from extproc.core.errors import Unauthenticated
from extproc.core.gateway_jwt import GatewayJwtVerifier, names_sandbox
from extproc.interpreter.binding import BindingWatch
from extproc.interpreter.settings import InterpreterSettings

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/health"})
# Routes where either credential will do (see the module docstring).
EITHER_CREDENTIAL = re.compile(r"/contexts(/[^/]+(/restart)?)?")
NOT_BOUND = "unauthorized access: this sandbox is not bound yet"


class Authenticator:
    def __init__(self, settings: InterpreterSettings) -> None:
        key = settings.jwt_public_key
        self._verifier = GatewayJwtVerifier(key) if key else None
        self._sandbox_id = settings.sandbox_id
        self._token = settings.access_token.encode() if settings.access_token else None
        # Unbound: the binding comes from picod's file (or never, without one).
        self._binding = (
            BindingWatch(settings.binding_file, settings.access_token)
            if key and settings.sandbox_id is None
            else None
        )
        self._open = settings.no_auth and self._verifier is None and self._token is None

    def check(self, path: str, headers: list[tuple[bytes, bytes]]) -> None:
        """Return if the request may pass, else raise Unauthenticated."""
        if path in OPEN_PATHS or self._open:
            return
        sandbox_id, expected_token = self._sandbox_id, self._token
        if self._binding is not None:
            self._binding.refresh()
            sandbox_id, expected_token = self._binding.sandbox_id, self._binding.access_token
            if sandbox_id is None:
                raise Unauthenticated(NOT_BOUND)
        if self._verifier is None and expected_token is None:
            raise Unauthenticated("unauthorized access: no credentials are configured")
        presented = credentials(headers)
        bearer, token = presented.bearer, presented.access_token
        jwt_ok = False
        if bearer is not None and self._verifier is not None:
            claims = self._verifier.claims(bearer.decode("latin-1"))
            if claims is None:
                raise Unauthenticated("unauthorized access: invalid bearer token")
            if not names_sandbox(claims, sandbox_id):
                log.info("rejected JWT: session_id is another sandbox")
                raise Unauthenticated("unauthorized access: invalid bearer token")
            jwt_ok = True
        token_ok = False
        if token is not None and expected_token is not None:
            if not hmac.compare_digest(token, expected_token):
                raise Unauthenticated("unauthorized access, please provide a valid access token")
            token_ok = True
        if EITHER_CREDENTIAL.fullmatch(path):
            if not (jwt_ok or token_ok):
                raise Unauthenticated("unauthorized access: missing credentials")
            return
        if expected_token is not None and not token_ok:
            raise Unauthenticated("unauthorized access, please provide a valid access token")
        if self._verifier is not None and not jwt_ok:
            raise Unauthenticated("unauthorized access: missing bearer token")
