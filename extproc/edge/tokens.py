"""JWTs for picod: RS256 with the router identity, one per sandbox, reused until near expiry.

An RSA-2048 signature costs about a millisecond, thirty times the whole Check budget, so a
token is signed once per sandbox and reused until fewer than `refresh_margin_s` seconds of
its life remain. The claims are AgentCube's router claims (`iss`, `iat`, `exp`,
`session_id`), so an AgentCube picod accepts them too.

The fast path (fast_path.py) signs ahead of time, in batches and off the event loop
(`issue`: the RSA work releases the GIL), and hands its tokens to the Checks (`remember`), so
one token per sandbox serves both.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import jwt
from cachetools import TTLCache
from cryptography.hazmat.primitives import serialization

from extproc.core.identity import load_or_create_router_identity
from extproc.edge.settings import TokenSettings

ISSUER = "agentcube-router"


class TokenSigner:
    def __init__(self, settings: TokenSettings, clock: Callable[[], float] = time.time) -> None:
        # Kubernetes mode: AgentCube's identity, read from its Secret at start-up; local
        # mode: the files in the state directory.
        identity = settings.identity or load_or_create_router_identity(settings.identity_directory)
        self._key = serialization.load_pem_private_key(identity.private_pem, password=None)
        self.public_pem = identity.public_pem
        self._lifetime = settings.lifetime_s
        self._margin = settings.refresh_margin_s
        self._clock = clock
        # Entries die when they could no longer be handed out anyway, so the cache only holds
        # sandboxes seen in the last few minutes.
        self._cache: TTLCache[str, tuple[str, int]] = TTLCache(
            maxsize=settings.cache_max,
            ttl=max(1, settings.lifetime_s - settings.refresh_margin_s),
            timer=clock,
        )

    def token_until(self, sandbox_id: str) -> tuple[str, float]:
        """(token, the unix time after which it must not be handed out any more)."""
        now = self._clock()
        cached = self._cache.get(sandbox_id)
        if cached is None or cached[1] - now < self._margin:
            cached = self.issue(sandbox_id, now)
            self._cache[sandbox_id] = cached
        return cached[0], cached[1] - self._margin

    @property
    def lifetime_s(self) -> int:
        return self._lifetime

    def issue(self, sandbox_id: str, now: float) -> tuple[str, int]:
        """A new token and its `exp`, not cached; safe to call from any thread."""
        iat = int(now)
        exp = iat + self._lifetime
        token = jwt.encode(
            {"iss": ISSUER, "iat": iat, "exp": exp, "session_id": sandbox_id},
            self._key,  # type: ignore[arg-type]
            algorithm="RS256",
        )
        return token, exp

    def remember(self, sandbox_id: str, token: str, exp: int) -> None:
        """Hand a token `issue` made to the Checks, unless they hold a newer one."""
        cached = self._cache.get(sandbox_id)
        if cached is None or cached[1] < exp:
            self._cache[sandbox_id] = (token, exp)

    def forget(self, sandbox_id: str) -> None:
        self._cache.pop(sandbox_id, None)

    def __len__(self) -> int:
        return len(self._cache)
