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
    def __init__(self, public_key_pem: str, sandbox_id: str | None) -> None:
        self._key = load_public_key(public_key_pem)
        self._sandbox_id = sandbox_id

    def verify(self, token: str) -> bool:
        import jwt  # loaded on first use, then cached by the import system

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
            return False
        if self._sandbox_id is not None and claims.get("session_id") != self._sandbox_id:
            log.info("rejected JWT: session_id is another sandbox")
            return False
        return True
