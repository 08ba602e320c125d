"""core/readable.py: a future done once an fd the loop does not own is readable, and the
loop's watch on the fd gone when the block ends (a second watch on it can then be made)."""

from __future__ import annotations

import asyncio
import socket

from extproc.core.readable import when_readable


async def test_done_only_once_readable_and_unwatched_after() -> None:
    ours, theirs = socket.socketpair()
    try:
        async with when_readable(ours) as readable:
            await asyncio.sleep(0.01)
            assert not readable.done()
            theirs.send(b"x")
            await asyncio.wait_for(readable, 5)
        loop = asyncio.get_running_loop()
        # remove_reader answers False when nothing watches the fd any more
        assert loop.remove_reader(ours) is False
    finally:
        ours.close()
        theirs.close()


async def test_unwatched_when_the_block_raises() -> None:
    ours, theirs = socket.socketpair()
    try:
        try:
            async with when_readable(ours.fileno()) as readable:
                raise RuntimeError("the caller gave up")
        except RuntimeError:
            pass
        assert not readable.done()
        assert asyncio.get_running_loop().remove_reader(ours.fileno()) is False
    finally:
        ours.close()
        theirs.close()
