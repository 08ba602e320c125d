"""What a Create must pass before anything starts: its idempotency key and its tenant's
quota. Backend-free (the local backend hands in how to read sandboxes), so another backend
can use the same rules.

Idempotency. E2B answers a retried `Idempotency-Key` with the sandbox the first request made,
live or ended, for 24 h. The key is stored with the sandbox's row (SQLite), so it survives a
restart: the index here is rebuilt from the store at start, holds (tenant, key) -> (created
at, sandbox id) oldest first, and is pruned from the front, so it never grows without bound.
Concurrent duplicates wait for the one in flight (single flight).

Quotas. The concurrency limit is exact: creates admitted but not yet live count too, so two
concurrent creates cannot both take the last slot. Creates per minute is a token bucket per
tenant. Both raise ResourceExhausted (HTTP 429 at the edge) with the limit named.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Iterator

from extproc.core import quotas
from extproc.core.errors import ResourceExhausted
from extproc.lifecycle.sandboxes import CreateSpec, Sandbox

IDEMPOTENCY_WINDOW_S = 86400.0

Key = tuple[str, str]


class Idempotency:
    def __init__(self) -> None:
        self._index: OrderedDict[Key, tuple[float, str]] = OrderedDict()
        self._inflight: dict[Key, asyncio.Future[Sandbox]] = {}

    def load(self, rows: list[tuple[str, str, str, float]]) -> None:
        """(tenant, key, sandbox id, created at) rows from the store, oldest first."""
        for tenant, key, sandbox_id, at in rows:
            self._index[(tenant, key)] = (at, sandbox_id)

    def prune(self, cutoff: float) -> None:
        while self._index:
            oldest, (at, _) = next(iter(self._index.items()))
            if at > cutoff:
                break
            del self._index[oldest]

    def sandbox_id(self, key: Key, cutoff: float) -> str | None:
        known = self._index.get(key)
        return known[1] if known is not None and known[0] > cutoff else None

    async def once(self, key: Key, create: Callable[[], Awaitable[Sandbox]]) -> Sandbox:
        """`create()` unless a create with `key` is in flight, whose result is then shared."""
        if key in self._inflight:
            return await asyncio.shield(self._inflight[key])
        future: asyncio.Future[Sandbox] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            sandbox = await create()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters, if any, re-raise it
            raise
        else:
            future.set_result(sandbox)
            # The row (with its key) is committed; this is the index over it.
            self._index[key] = (sandbox.started_at, sandbox.sandbox_id)
            return sandbox
        finally:
            del self._inflight[key]


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
