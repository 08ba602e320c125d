"""Single flight: concurrent calls for the same key share one run of the work.

The first caller for a key runs the work; callers that arrive while it runs wait for its
outcome, value or exception, instead of starting their own. Nothing is kept afterwards:
caching the result is the caller's business (each has its own rule for what may be kept).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    def __init__(self) -> None:
        self._inflight: dict[K, asyncio.Future[V]] = {}

    def __contains__(self, key: K) -> bool:
        return key in self._inflight

    async def run(self, key: K, work: Callable[[], Awaitable[V]]) -> V:
        """`work()`, or the outcome of the run for `key` already in flight."""
        pending = self._inflight.get(key)
        if pending is not None:
            # Shielded: a waiter cancelled (its caller gone) must not cancel the shared run.
            return await asyncio.shield(pending)
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            value = await work()
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: waiters re-raise it, nobody logs it as lost
            raise
        else:
            future.set_result(value)
            return value
        finally:
            del self._inflight[key]
