"""Which sandbox a signed `/files` URL is for, when the URL does not say.

With `E2B_SANDBOX_URL` set (header-routed deployments, which is how `up` is used) the SDK's
`download_url()` / `upload_url()` are `E2B_SANDBOX_URL/files?path=...&signature=...` (plus
`username`, `signature_expiration`): no host label, no header, no sandbox id. What the URL
does carry is a signature keyed with one sandbox's envd token, so its sandbox is the one whose
token verifies it (core/signed_urls.py has the rule). Only the local mode can look: in
Kubernetes mode the edge holds digests of the tokens, which cannot verify a signature.

Cost. Trying one token is one SHA-256 over ~100 bytes, about 1.2 µs in CPython on the
machine the benchmarks ran on, so a full scan of 10 000 sandboxes is ~12 ms of CPU. Three
things keep that off the common path and bounded:
- a cache signature -> sandbox id (LRU, SIGNATURE_CACHE_MAX entries): a URL used again costs
  one dict lookup here, then the Check's ordinary one-token verification, whatever the number
  of sandboxes; concurrent requests for one new signature share one scan;
- a scan yields to the event loop every SCAN_SLICE candidates (~0.6 ms), so the Checks of
  other requests are not held up behind it;
- scans draw from a budget of SCAN_BUDGET_PER_S candidate hashes a second (about a fifth of a
  core): past it, a signed URL that is not cached yet gets 429 until the budget refills, so a
  flood of forged signatures costs at most that much CPU and never slows cached URLs.

Leaks. A scan tries every candidate (no early exit) and compares in constant time; "no
sandbox" and "more than one" both get envd's own 401 for a bad signature, the answer a wrong
signature gets on a URL that names its sandbox. Only a verifying signature is cached. So a
client learns nothing about which sandboxes exist; how long an uncached scan takes grows with
how many there are, which is all it says.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from cachetools import LRUCache

from extproc.core import signed_urls
from extproc.core.errors import ResourceExhausted
from extproc.core.quotas import TokenBucket
from extproc.core.single_flight import SingleFlight
from extproc.edge.sandbox_directory import Directory, Route

log = logging.getLogger(__name__)

# Signatures remembered with their sandbox; an entry is ~250 bytes. Default 16384.
SIGNATURE_CACHE_MAX = 16_384
# Candidates tried between two yields to the event loop. Default 512.
SCAN_SLICE = 512
# Candidate hashes per second that uncached lookups may spend, and the most one second may
# bank. Default 200 000 (~0.25 s of CPU: 20 scans a second at 10 000 sandboxes).
SCAN_BUDGET_PER_S = 200_000.0

BUSY = "too many new signed URLs to look up right now; retry in a second"


@dataclass(eq=False, repr=False)
class SignatureRouter:
    """Finds the sandbox whose envd token verifies a signed URL; see the module docstring."""

    directory: Directory
    clock: Callable[[], float] = time.monotonic
    # Finite: the budget is a token bucket, which an infinite rate would turn into NaN.
    budget_per_s: float = SCAN_BUDGET_PER_S
    _budget: TokenBucket = field(init=False)
    _cache: LRUCache[str, str] = field(
        init=False, default_factory=lambda: LRUCache(maxsize=SIGNATURE_CACHE_MAX)
    )
    _scans: SingleFlight[str, str | None] = field(init=False, default_factory=SingleFlight)

    def __post_init__(self) -> None:
        if not 0 < self.budget_per_s < math.inf:
            raise ValueError(f"budget_per_s must be positive and finite, not {self.budget_per_s}")
        # Full at the start: a second's worth of hashes may be spent at once.
        self._budget = TokenBucket(self.budget_per_s, self.budget_per_s, self.clock())

    def __len__(self) -> int:
        return len(self._cache)

    async def find(self, params: Mapping[str, str], operation: signed_urls.Operation) -> str | None:
        """The id of the one sandbox whose token signs `params` (from `parse_query`, with a
        well-formed, unexpired signature) for `operation`; None when none or several do.

        Raises ResourceExhausted when the scan budget is spent.
        """
        signature = params["signature"]
        cached = self._cache.get(signature)
        if cached is not None:
            return cached
        return await self._scans.run(signature, lambda: self._scan_and_cache(params, operation))

    async def _scan_and_cache(
        self, params: Mapping[str, str], operation: signed_urls.Operation
    ) -> str | None:
        found = await self._scan(params, operation)
        if found is not None:
            self._cache[params["signature"]] = found
        return found

    async def _scan(
        self, params: Mapping[str, str], operation: signed_urls.Operation
    ) -> str | None:
        wanted = signed_urls.signature_digest(params["signature"])
        if wanted is None:
            return None
        before, after = signed_urls.signed_around_token(
            params.get("path", ""),
            operation,
            params.get("username", ""),
            signed_urls.parse_expiration(params.get("signature_expiration")),
        )
        routes = self.directory.routes()
        self._spend(len(routes))
        matches: list[Route] = []
        sha256, same = hashlib.sha256, hmac.compare_digest
        for start in range(0, len(routes), SCAN_SLICE):
            if start:
                await asyncio.sleep(0)
            for route in routes[start : start + SCAN_SLICE]:
                token = route.envd_access_token
                if token and same(sha256(before + token.encode() + after).digest(), wanted):
                    matches.append(route)
        if len(matches) > 1:
            # Two sandboxes with one token: never minted so; refuse rather than pick one.
            ids = ", ".join(route.sandbox_id for route in matches)
            log.warning("a signed URL verifies with several sandboxes (%s); refused", ids)
            return None
        return matches[0].sandbox_id if matches else None

    def _spend(self, hashes: int) -> None:
        # A directory larger than a second's budget is scanned whenever the budget is full.
        cost = min(float(hashes), self._budget.capacity)
        if not self._budget.take(self.clock(), cost):
            raise ResourceExhausted(BUSY)
