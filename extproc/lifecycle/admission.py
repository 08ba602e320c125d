"""What a Create must pass before anything starts: its tenant's quota (its Idempotency-Key
is the servicer's, `idempotency`). Backend-free (the local backend hands in how many
sandboxes the tenant holds), so another backend can use the same rules.

Quotas. The concurrency limit is exact: creates admitted but not yet live count too, so two
concurrent creates cannot both take the last slot. Creates per minute is a token bucket per
tenant. Both raise ResourceExhausted (HTTP 429 at the edge) with the limit named.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterator

from extproc.core import quotas
from extproc.core.errors import ResourceExhausted
from extproc.lifecycle.sandboxes import CreateSpec


class Admission:
    def __init__(self, max_sandboxes: int, clock: Callable[[], float]) -> None:
        self._max_sandboxes = max_sandboxes
        self._clock = clock
        # Creates admitted per tenant but not yet live: the concurrency quota counts them.
        self._admitted: Counter[str] = Counter()
        self._create_rates = quotas.RateLimiter()

    @contextlib.contextmanager
    def admit(self, spec: CreateSpec, held: int) -> Iterator[None]:
        """Check the tenant's quota (`held`: its running or paused sandboxes); hold the slot
        until the caller has made the sandbox live."""
        tenant = spec.tenant
        limit = spec.max_sandboxes or self._max_sandboxes
        if self._admitted[tenant] + held >= limit:
            raise ResourceExhausted(
                f"quota exceeded: namespace {tenant!r} may have at most {limit} running or "
                "paused sandboxes (maxSandboxes); kill one first"
            )
        per_minute = spec.creates_per_minute or quotas.BUILTIN.creates_per_minute
        if not self._create_rates.allow(tenant, per_minute / 60.0, per_minute, self._clock()):
            raise ResourceExhausted(
                f"rate limit exceeded: namespace {tenant!r} may create at most {per_minute} "
                "sandboxes per minute (createsPerMinute); retry later"
            )
        self._admitted[tenant] += 1
        try:
            yield
        finally:
            self._admitted[tenant] -= 1
            if not self._admitted[tenant]:
                del self._admitted[tenant]
