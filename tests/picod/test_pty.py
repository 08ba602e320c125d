"""PTY sessions through the real SDK: a real pseudo-terminal, input, resize, kill."""

from __future__ import annotations

import asyncio

import pytest
from e2b import AsyncSandbox, CommandExitException, Sandbox
from e2b.sandbox.commands.command_handle import PtySize


def _read_until(events: object, needle: bytes) -> bytes:
    seen = b""
    for _stdout, _stderr, pty in events:  # type: ignore[attr-defined]
        if pty is not None:
            seen += pty
            if needle in seen:
                return seen
    raise AssertionError(f"stream ended before {needle!r}; saw {seen!r}")


def test_pty_is_a_terminal_with_size_and_resizes(sync_sandbox: Sandbox) -> None:
    terminal = sync_sandbox.pty.create(PtySize(rows=24, cols=80), timeout=15)
    events = iter(terminal)
    sync_sandbox.pty.send_stdin(terminal.pid, b"tty -s && echo IS-$((6*7))-TTY; stty size\n")
    out = _read_until(events, b"24 80")
    assert b"IS-42-TTY" in out
    sync_sandbox.pty.resize(terminal.pid, PtySize(rows=50, cols=132))
    sync_sandbox.pty.send_stdin(terminal.pid, b"stty size; echo $TERM\n")
    out = _read_until(events, b"xterm-256color")
    assert b"50 132" in out
    sync_sandbox.pty.send_stdin(terminal.pid, b"exit 5\n")
    with pytest.raises(CommandExitException) as caught:
        terminal.wait()
    assert caught.value.exit_code == 5


def test_pty_kill(sync_sandbox: Sandbox) -> None:
    terminal = sync_sandbox.pty.create(PtySize(rows=10, cols=40))
    assert sync_sandbox.pty.kill(terminal.pid) is True
    with pytest.raises(CommandExitException) as caught:
        terminal.wait()
    assert caught.value.error == "signal: killed"
    assert sync_sandbox.pty.kill(terminal.pid) is False


def test_pty_controls_job_signals(sync_sandbox: Sandbox) -> None:
    # Ctrl+C through the terminal reaches the foreground job: a controlling TTY exists.
    terminal = sync_sandbox.pty.create(PtySize(rows=24, cols=80), timeout=15)
    events = iter(terminal)
    # The job prints once it runs, and bash gives a job the terminal before exec'ing it.
    sync_sandbox.pty.send_stdin(terminal.pid, b"sh -c 'echo go-$((0+1)); exec sleep 30'\n")
    _read_until(events, b"go-1")
    sync_sandbox.pty.send_stdin(terminal.pid, b"\x03")
    sync_sandbox.pty.send_stdin(terminal.pid, b"echo after-$((1+1))\n")
    _read_until(events, b"after-2")
    sync_sandbox.pty.kill(terminal.pid)


def test_resize_of_a_non_pty_is_invalid(sync_sandbox: Sandbox) -> None:
    handle = sync_sandbox.commands.run("sleep 30", background=True)
    try:
        with pytest.raises(Exception, match="not a PTY"):
            sync_sandbox.pty.resize(handle.pid, PtySize(rows=1, cols=1))
        with pytest.raises(Exception, match="not a PTY"):
            sync_sandbox.pty.send_stdin(handle.pid, b"x")
    finally:
        handle.kill()


async def test_async_pty_round_trip(async_sandbox: AsyncSandbox) -> None:
    seen = bytearray()
    got = asyncio.Event()

    def on_data(chunk: bytes) -> None:
        seen.extend(chunk)
        if b"PTY-OK-3" in seen:
            got.set()

    terminal = await async_sandbox.pty.create(PtySize(rows=24, cols=80), on_data=on_data)
    await async_sandbox.pty.send_stdin(terminal.pid, b"echo PTY-OK-$((1+2))\n")
    await asyncio.wait_for(got.wait(), 10)
    assert await async_sandbox.pty.kill(terminal.pid)
    with pytest.raises(CommandExitException):
        await terminal.wait()
