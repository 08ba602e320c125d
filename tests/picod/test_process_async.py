"""process.Process through the real async E2B SDK (AsyncSandbox)."""

from __future__ import annotations

import asyncio

import pytest
from e2b import AsyncSandbox, CommandExitException, TimeoutException


async def test_run(async_sandbox: AsyncSandbox) -> None:
    result = await async_sandbox.commands.run("echo a; echo b >&2", envs={"X": "1"})
    assert (result.stdout, result.stderr) == ("a\n", "b\n")
    with pytest.raises(CommandExitException) as caught:
        await async_sandbox.commands.run("exit 2")
    assert caught.value.exit_code == 2


async def test_concurrent_runs(async_sandbox: AsyncSandbox) -> None:
    results = await asyncio.gather(*(async_sandbox.commands.run(f"echo {i}") for i in range(20)))
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(20)]


async def test_background_callbacks_stdin_and_kill(async_sandbox: AsyncSandbox) -> None:
    got = asyncio.Event()
    lines: list[str] = []

    def on_stdout(text: str) -> None:
        lines.append(text)
        if "ping" in "".join(lines):
            got.set()

    handle = await async_sandbox.commands.run(
        "cat", background=True, stdin=True, on_stdout=on_stdout
    )
    await async_sandbox.commands.send_stdin(handle.pid, "ping\n")
    await asyncio.wait_for(got.wait(), 10)
    assert handle.pid in [p.pid for p in await async_sandbox.commands.list()]
    assert await handle.kill()
    with pytest.raises(CommandExitException):
        await handle.wait()


async def test_stream_input_handle(async_sandbox: AsyncSandbox) -> None:
    handle = await async_sandbox.commands.run("cat", background=True, stdin=True)
    async with async_sandbox.commands.stream_input(handle.pid) as writer:
        for i in range(10):
            await writer.send(f"{i},")
    await async_sandbox.commands.close_stdin(handle.pid)
    assert (await handle.wait()).stdout == "".join(f"{i}," for i in range(10))


async def test_timeout(async_sandbox: AsyncSandbox) -> None:
    with pytest.raises(TimeoutException):
        await async_sandbox.commands.run("sleep 30", timeout=0.5)


async def test_disconnect_then_connect(async_sandbox: AsyncSandbox) -> None:
    handle = await async_sandbox.commands.run("read x; echo $x", background=True, stdin=True)
    await handle.disconnect()
    again = await async_sandbox.commands.connect(handle.pid)
    await async_sandbox.commands.send_stdin(handle.pid, "back\n")
    assert (await again.wait()).stdout == "back\n"
