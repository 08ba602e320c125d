"""envd access tokens: hex HMAC-SHA256(seed, sandbox id), as E2B's infra computes them.

Stateless to check: whoever holds the seed (the lifecycle service and the edge) can verify a
token without a lookup. The seed lives in one file, created 0600 and never logged.

Traffic access tokens (E2B's `network.allowPublicTraffic: false`) are keyed with the envd
token instead of the seed: hex HMAC-SHA256(envd token, "sandbox-traffic-" + id). Still a
secret only the seed's holder can mint, never stored, and a pure function of what every
sandbox record already carries, so a re-adopted or informer-built sandbox has it without
another lookup. It is one-way: the token reaches the sandbox's own servers, and knowing it
gives nothing towards the envd token; the envd token's holder (the same client) can derive it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

SEED_BYTES = 32


def load_or_create_seed(path: Path) -> bytes:
    """Read the seed at `path`, creating it (0600, 32 random bytes as hex) if absent."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        text = secrets.token_hex(SEED_BYTES)
        # O_EXCL: if two processes race, exactly one writes and both then read the same seed.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return load_or_create_seed(path)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(text + "\n")
    try:
        seed = bytes.fromhex(text)
    except ValueError as exc:
        raise ValueError(f"token seed {path} is not hex") from exc
    if len(seed) < 16:
        raise ValueError(f"token seed {path} is too short: expected at least 16 bytes of hex")
    return seed


def access_token(seed: bytes, sandbox_id: str) -> str:
    return hmac.new(seed, sandbox_id.encode("ascii"), hashlib.sha256).hexdigest()


def traffic_access_token(envd_access_token: str, sandbox_id: str) -> str:
    """E2B-Traffic-Access-Token of a sandbox whose public traffic is off; "" without a key."""
    if not envd_access_token:
        return ""
    message = ("sandbox-traffic-" + sandbox_id).encode("ascii")
    return hmac.new(envd_access_token.encode("ascii"), message, hashlib.sha256).hexdigest()
