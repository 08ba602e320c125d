"""envd's signed file URLs (`download_url` / `upload_url`), verified at the edge.

Signed URLs carry no X-Access-Token; the edge holds the sandbox token anyway, so it checks
the signature itself rather than passing an unauthenticated request to picod with a valid
JWT attached. The algorithm is E2B's: "v1_" + unpadded base64 of sha256 over
`path:operation:username:token[:expiration]`, operation `read` (GET) or `write` (POST).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import parse_qs


def expected_signature(
    path: str, operation: str, username: str, token: str, expiration: str | None
) -> str:
    raw = f"{path}:{operation}:{username}:{token}"
    if expiration is not None:
        raw += f":{expiration}"
    digest = hashlib.sha256(raw.encode("utf-8")).digest()
    return "v1_" + base64.b64encode(digest).rstrip(b"=").decode("ascii")


def signature_problem(query: str, method: str, token: str, now: float) -> str | None:
    """None when `query` carries a valid, unexpired signature; else why not (safe to show)."""
    params = parse_qs(query, keep_blank_values=True)
    signature = params.get("signature", [None])[0]
    if not signature:
        return "missing signature query parameter"
    expiration = params.get("signature_expiration", [None])[0]
    if expiration is not None:
        if not expiration.isdigit():
            return "invalid signature expiration"
        if int(expiration) < now:
            return "signature is already expired"
    operation = "read" if method == "GET" else "write"
    wanted = expected_signature(
        params.get("path", [""])[0], operation, params.get("username", [""])[0], token, expiration
    )
    if not hmac.compare_digest(wanted.encode(), signature.encode()):
        return "invalid signature"
    return None
