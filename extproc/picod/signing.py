"""Signed `/files` URLs: envd's v1 signature scheme, checked without any stored state.

`Sandbox.download_url()` / `upload_url()` let a client without the access token read or
write one path: the SDK signs "path:operation:username:token[:expiration]" with SHA-256 and
sends "v1_" + unpadded standard base64 of the digest, plus `signature_expiration` (unix
seconds) when the URL expires. The path is the exact `path` query value, and the username
is empty for the default user, so a URL cannot be replayed for another file, user or
direction.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Literal

from extproc.core.errors import Unauthenticated

Operation = Literal["read", "write"]
_PREFIX = "v1_"


def sign(path: str, operation: Operation, username: str, token: str, expiration: int | None) -> str:
    """The signature the SDK computes for these values."""
    raw = f"{path}:{operation}:{username}:{token}"
    if expiration is not None:
        raw += f":{expiration}"
    digest = hashlib.sha256(raw.encode("utf-8")).digest()
    return _PREFIX + base64.b64encode(digest).rstrip(b"=").decode("ascii")


def verify(
    *,
    path: str,
    operation: Operation,
    username: str,
    token: str,
    signature: str,
    expiration: str | None,
    now: float,
) -> None:
    """Raise Unauthenticated unless `signature` signs this request and has not expired.

    `expiration` is the raw `signature_expiration` query value (None when absent); `now`
    is the current unix time.
    """
    expires_at: int | None = None
    if expiration is not None:
        try:
            expires_at = int(expiration)
        except ValueError as e:
            raise Unauthenticated("invalid signature expiration") from e
    expected = sign(path, operation, username, token, expires_at)
    if not hmac.compare_digest(expected.encode("ascii"), signature.encode("utf-8", "replace")):
        raise Unauthenticated("invalid signature")
    if expires_at is not None and expires_at < now:
        raise Unauthenticated("signature is already expired")
