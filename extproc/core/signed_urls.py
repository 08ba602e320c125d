"""envd's signed `/files` URLs (the SDK's `download_url` / `upload_url`), checked once.

The edge and picod both check them (the edge before routing, picod as envd's own
`validateSigning`), so the rule lives here, and both take the query apart with the same
parser: if they read `?path=a&path=b` differently, one could pass a URL signed for `a`
while the other served `b`.

The rule is the SDK's (`e2b/sandbox/signature.py`): "v1_" + standard base64, padding
stripped, of SHA-256 over `path:operation:username:token`, plus `:expiration` only when
the URL expires. `operation` is `read` or `write`; `username` is "" for the default user;
`path` is the exact `path` query value; `expiration` is unix seconds, sent as
`signature_expiration`. A URL without it never expires.

Checks run in one order, cheapest and public first: a signature is present, the
expiration parses (ASCII digits only, at most Go's int64 as envd parses it; anything else
is refused, never guessed at), it is not in the past, then the signature is compared in
constant time. The expiry is checked before the signature: it is in the URL for anyone to
read, so saying "expired" reveals nothing, and an expired URL costs no hash. (envd compares
first; the two orders differ only in the message for a URL that is both forged and expired.)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Literal
from urllib.parse import parse_qsl

from extproc.core.errors import InvalidArgument, Unauthenticated

Operation = Literal["read", "write"]

PREFIX = "v1_"
# The query parameters a signed URL is made of; each may appear at most once.
SIGNED_PARAMETERS = frozenset({"path", "username", "signature", "signature_expiration"})
# envd binds signature_expiration to a Go int (64-bit).
MAX_EXPIRATION = 2**63 - 1
_DIGITS = re.compile(r"[0-9]{1,19}")  # ASCII only: str.isdigit() also takes "²"

NO_CREDENTIALS = "unauthorized access, please provide a valid access token or a valid signature"
BAD_EXPIRATION = "unauthorized access, invalid signature expiration"
EXPIRED = "unauthorized access, signature is already expired"
BAD_SIGNATURE = "unauthorized access, invalid signature"


def signed_around_token(
    path: str, operation: Operation, username: str, expiration: int | None
) -> tuple[bytes, bytes]:
    """(what precedes the token, what follows it) in the signed message: the digest of
    `before + token + after` is the signature. Lets a caller try many tokens on one URL."""
    after = f":{expiration}" if expiration is not None else ""
    return f"{path}:{operation}:{username}:".encode(), after.encode()


def sign(path: str, operation: Operation, username: str, token: str, expiration: int | None) -> str:
    """The signature the SDK computes for these values."""
    before, after = signed_around_token(path, operation, username, expiration)
    return sign_digest(hashlib.sha256(before + token.encode("utf-8") + after).digest())


def signature_digest(signature: str) -> bytes | None:
    """The SHA-256 a well-formed signature carries; None for anything else."""
    if not signature.startswith(PREFIX) or len(signature) != len(PREFIX) + 43:
        return None
    try:
        digest = base64.b64decode(signature[len(PREFIX) :] + "=", validate=True)
    except binascii.Error:
        return None
    # The last character carries 2 bits of padding: a non-canonical one is refused, as
    # `sign` could never have produced it.
    return digest if sign_digest(digest) == signature else None


def sign_digest(digest: bytes) -> str:
    """The signature string of a SHA-256 digest."""
    return PREFIX + base64.b64encode(digest).rstrip(b"=").decode("ascii")


def operation_of(method: str) -> Operation:
    """`write` for an upload (POST), `read` otherwise."""
    return "write" if method == "POST" else "read"


def parse_query(query: str) -> dict[str, str]:
    """The query string's parameters, blank values kept.

    Raises InvalidArgument when the query is not ASCII, an escape is not UTF-8, or a
    signed parameter appears twice (envd refuses that too).
    """
    if not query.isascii():
        raise InvalidArgument("the query string must be ASCII (percent-encode the rest)")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError as e:
        raise InvalidArgument("query parameters must be valid UTF-8") from e
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in params and name in SIGNED_PARAMETERS:
            raise InvalidArgument(f"the {name} query parameter is given more than once")
        params[name] = value
    return params


def parse_expiration(raw: str | None) -> int | None:
    """`signature_expiration` as unix seconds; None when absent. Unauthenticated if malformed."""
    if raw is None:
        return None
    if not _DIGITS.fullmatch(raw) or int(raw) > MAX_EXPIRATION:
        raise Unauthenticated(BAD_EXPIRATION)
    return int(raw)


def verify(params: Mapping[str, str], operation: Operation, token: str | None, now: float) -> None:
    """Return if `params` (from `parse_query`) sign this operation; else raise Unauthenticated.

    `token` is the sandbox's access token (None or "": nothing can be signed); `now` is
    the current unix time.
    """
    signature = params.get("signature")
    if not signature or not token:
        raise Unauthenticated(NO_CREDENTIALS)
    expires_at = parse_expiration(params.get("signature_expiration"))
    if expires_at is not None and expires_at < now:
        raise Unauthenticated(EXPIRED)
    expected = sign(
        params.get("path", ""), operation, params.get("username", ""), token, expires_at
    )
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "surrogatepass")):
        raise Unauthenticated(BAD_SIGNATURE)
