"""core/single_flight.py: concurrent calls for one key share one run, its value or its error;
a waiter's cancellation leaves the run alone; nothing is kept once it is done."""

from __future__ import annotations

import asyncio

import pytest

from extproc.core.single_flight import SingleFlight


async def test_concurrent_calls_share_one_run_and_later_ones_run_again() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    runs = 0
    gate = asyncio.Event()

    async def work() -> int:
        nonlocal runs
        runs += 1
        run = runs
        await gate.wait()
        return run

    calls = [asyncio.ensure_future(flight.run("a", work)) for _ in range(3)]
    other = asyncio.ensure_future(flight.run("b", work))  # another key: a run of its own
    await asyncio.sleep(0)
    assert "a" in flight and runs == 2
    gate.set()
    assert sorted([*await asyncio.gather(*calls), await other]) == [1, 1, 1, 2]
    assert "a" not in flight
    assert await flight.run("a", work) == 3  # nothing kept: a new call runs again


async def test_the_error_reaches_every_waiter() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    gate = asyncio.Event()

    async def failing() -> int:
        await gate.wait()
        raise LookupError("gone")

    calls = [asyncio.ensure_future(flight.run("k", failing)) for _ in range(2)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert [type(r) for r in results] == [LookupError, LookupError]
    assert "k" not in flight


async def test_a_cancelled_waiter_leaves_the_run_to_the_others() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    gate = asyncio.Event()

    async def work() -> str:
        await gate.wait()
        return "done"

    first = asyncio.ensure_future(flight.run("k", work))
    waiter = asyncio.ensure_future(flight.run("k", work))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    gate.set()
    assert await first == "done"
