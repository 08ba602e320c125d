"""Verifying the gateway's JWT inside a sandbox (picod and the code interpreter).

The edge signs RS256 tokens with the router identity (claims `iss`, `iat`, `exp`,
`session_id`); a sandbox daemon accepts one only if it is unexpired and names this sandbox,
so a token for one sandbox never opens another. One copy of this check, because it is the
sandbox's front door.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

log = logging.getLogger(__name__)

# Clock skew tolerated on exp/iat, seconds.
JWT_LEEWAY_SECONDS = 30


def load_public_key(pem: str) -> RSAPublicKey:
    """Parse the gateway's RSA public key; ValueError names what is wrong."""
    # Imported here: a daemon without JWT auth should not pay ~0.1 s for cryptography.
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(pem.encode())
    except (ValueError, TypeError) as e:
        raise ValueError("the JWT public key is not a PEM public key") from e
    if not isinstance(key, RSAPublicKey):
        raise ValueError("the JWT public key must be an RSA key (RS256)")
    return key


class GatewayJwtVerifier:
    """Checks gateway JWTs; `sandbox_id` (None: any) is the `session_id` `verify` requires.

    picod learns its sandbox id late (a warm-pool pod is bound by `/init`), so it reads the
    claims with `claims` and compares `session_id` against its current binding itself.
    """

    def __init__(self, public_key_pem: str, sandbox_id: str | None = None) -> None:
        self._key = load_public_key(public_key_pem)
        self._sandbox_id = sandbox_id
        # Paid now, at start-up, not by the first request: a warm pod's first request is
        # the bind of a Create somebody waits for.
        import jwt  # noqa: F401

    def claims(self, token: str) -> dict[str, Any] | None:
        """The claims of an unexpired RS256 token the gateway signed; None for any other."""
        import jwt  # imported at construction; this is a dict lookup

        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=["RS256"],
                options={"require": ["exp", "iat"]},
                leeway=JWT_LEEWAY_SECONDS,
            )
        except jwt.InvalidTokenError as e:
            # The reason class only: never the token or the library's message.
            log.info("rejected JWT: %s", type(e).__name__)
            return None
        return claims

    def verify(self, token: str) -> bool:
        claims = self.claims(token)
        if claims is None:
            return False
        if not names_sandbox(claims, self._sandbox_id):
            log.info("rejected JWT: session_id is another sandbox")
            return False
        return True


def names_sandbox(claims: dict[str, Any], sandbox_id: str | None) -> bool:
    """Whether verified `claims` are for `sandbox_id` (any sandbox when it is None)."""
    return sandbox_id is None or claims.get("session_id") == sandbox_id
