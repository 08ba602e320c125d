"""Idempotency-Key on Create, for every backend (the servicer wraps the backend's create).

E2B answers a retried `Idempotency-Key` with the sandbox the first request made, live or
ended, for 24 h; the key is per tenant, and the body of the retry is not compared (a retry
with another body gets the first sandbox too). Concurrent duplicates wait for the one in
flight (single flight), so they cannot make two sandboxes.

The index here holds (tenant, key) -> (created at, sandbox id) oldest first and is pruned
from the front, so it never grows without bound. A backend that keeps keys across restarts
hands them back at the first keyed Create (`recorded_keys`: the local backend stores the
key with the sandbox's row in SQLite); the sandbox a known key names is asked of the
backend (`keyed_sandbox`), and a key whose sandbox the backend has forgotten starts anew.
A Create whose caller left halfway still finishes (as every unary call does, `handling`)
and records its key, so the retry gets what it made.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from extproc.core.single_flight import SingleFlight
from extproc.lifecycle.sandboxes import CreateSpec, Sandbox

IDEMPOTENCY_WINDOW_S = 86400.0

Key = tuple[str, str]
# (tenant, key, sandbox id, created at), as a backend recorded them.
RecordedKey = tuple[str, str, str, float]


class KeyedBackend(Protocol):
    """What Idempotency-Key handling needs of a backend."""

    @property
    def clock(self) -> Callable[[], float]: ...

    async def create(self, spec: CreateSpec) -> Sandbox: ...

    async def recorded_keys(self, since: float) -> list[RecordedKey]:
        """Keys of sandboxes created at or after `since` that outlive this process, oldest
        first (none for a backend that keeps no record)."""
        ...

    async def keyed_sandbox(self, sandbox_id: str) -> Sandbox | None:
        """The sandbox a key made, live or ended, with its access token; None if the
        backend no longer knows it."""
        ...


class IdempotentCreates:
    def __init__(self, backend: KeyedBackend) -> None:
        self._backend = backend
        self._index: OrderedDict[Key, tuple[float, str]] = OrderedDict()
        self._creates: SingleFlight[Key, Sandbox] = SingleFlight()
        self._loaded = False
        self._loading = asyncio.Lock()

    def __len__(self) -> int:
        return len(self._index)

    async def create(self, spec: CreateSpec) -> Sandbox:
        """The backend's create, once per (tenant, Idempotency-Key) within the window."""
        if not spec.idempotency_key:
            return await self._backend.create(spec)
        key = (spec.tenant, spec.idempotency_key)
        known = await self._known(key)
        if known is not None:
            return known
        return await self._creates.run(key, lambda: self._create(key, spec))

    async def _create(self, key: Key, spec: CreateSpec) -> Sandbox:
        sandbox = await self._backend.create(spec)
        self._index[key] = (sandbox.started_at, sandbox.sandbox_id)
        return sandbox

    async def _known(self, key: Key) -> Sandbox | None:
        cutoff = self._backend.clock() - IDEMPOTENCY_WINDOW_S
        await self._load(cutoff)
        while self._index:
            oldest, (at, _) = next(iter(self._index.items()))
            if at > cutoff:
                break
            del self._index[oldest]
        known = self._index.get(key)
        if known is None or known[0] <= cutoff:  # pruned from the front only: check
            return None
        return await self._backend.keyed_sandbox(known[1])

    async def _load(self, since: float) -> None:
        async with self._loading:
            if self._loaded:
                return
            for tenant, key, sandbox_id, at in await self._backend.recorded_keys(since):
                self._index[(tenant, key)] = (at, sandbox_id)
            self._loaded = True
