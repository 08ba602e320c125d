"""The warm pool's refill (lifecycle/pooling.py): one start at a time, each marked as
background work, and failures backing off."""

from __future__ import annotations

import asyncio

from extproc.lifecycle.pooling import BACKGROUND, Pool


async def test_a_refill_starts_one_sandbox_at_a_time_in_the_background() -> None:
    starting = 0
    most = 0
    flagged: list[bool] = []

    async def start() -> int:
        nonlocal starting, most
        starting += 1
        most = max(most, starting)
        flagged.append(BACKGROUND.get())
        await asyncio.sleep(0.01)
        starting -= 1
        return len(flagged)

    pool: Pool[int] = Pool("base", 5, start, lambda _: True, lambda: True, lambda _: None)
    refill = asyncio.create_task(pool.run())
    try:
        while pool.ready < 5:
            await asyncio.sleep(0.005)
        assert most == 1
        assert flagged == [True] * 5
        assert not BACKGROUND.get()  # the flag stays inside the refill
        assert pool.take() == 1
        while pool.ready < 5:
            await asyncio.sleep(0.005)
        assert len(flagged) == 6
    finally:
        refill.cancel()
        await asyncio.gather(refill, return_exceptions=True)


async def test_a_refill_stops_at_the_room_left() -> None:
    made = 0

    async def start() -> int:
        nonlocal made
        made += 1
        return made

    pool: Pool[int] = Pool("base", 5, start, lambda _: True, lambda: made < 2, lambda _: None)
    refill = asyncio.create_task(pool.run())
    try:
        await asyncio.sleep(0.05)
        assert pool.ready == 2
    finally:
        refill.cancel()
        await asyncio.gather(refill, return_exceptions=True)
