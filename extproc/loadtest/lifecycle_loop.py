"""The `lifecycle` scenario: SDK clients looping create -> commands.run -> files -> kill.

Each client is the real E2B SDK (`AsyncSandbox`), so every latency here is what an agent
using the SDK would see, HTTP/2 and retries included. A client starts an iteration only
before the deadline and always kills what it created, so the window ends when the last
iteration does (at most one iteration past the duration) and no sandbox outlives the run.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from e2b import AsyncSandbox

from extproc.loadtest.gateway_env import one_line
from extproc.loadtest.recording import Recorder
from extproc.loadtest.settings import LifecycleSettings

T = TypeVar("T")

# after a failed create, so a gateway that refuses at once is not hammered in a tight loop
_RETRY_PAUSE_S = 0.2
_FILE_PATH = "/tmp/agentcube-e2b-loadtest.bin"  # noqa: S108 (inside the sandbox)


@dataclass
class LifecycleLoop:
    settings: LifecycleSettings
    template: str
    sandbox_timeout_s: int
    recorder: Recorder
    stop: asyncio.Event
    iterations: int = field(default=0, init=False)

    async def run(self, duration_s: float) -> None:
        deadline = asyncio.get_running_loop().time() + duration_s
        await asyncio.gather(*(self._client(deadline) for _ in range(self.settings.clients)))

    async def _client(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        payload = os.urandom(self.settings.file_bytes)
        while loop.time() < deadline and not self.stop.is_set():
            sandbox = await self._timed(
                "create", lambda: AsyncSandbox.create(self.template, timeout=self.sandbox_timeout_s)
            )
            if sandbox is None:
                await asyncio.sleep(_RETRY_PAUSE_S)
                continue
            try:
                await self._use(sandbox, payload)
            finally:
                await self._timed("kill", sandbox.kill)
            self.iterations += 1

    async def _use(self, sandbox: AsyncSandbox, payload: bytes) -> None:
        ran = await self._timed("commands.run", lambda: sandbox.commands.run("true"))
        if ran is None or self.stop.is_set():
            return
        wrote = await self._timed("files.write", lambda: sandbox.files.write(_FILE_PATH, payload))
        if wrote is None or self.stop.is_set():
            return
        started = time.perf_counter()
        try:
            read = await sandbox.files.read(_FILE_PATH, format="bytes")
        except Exception as error:  # any SDK failure is a result to count
            self.recorder.record_error("files.read", type(error).__name__, one_line(error))
            return
        if bytes(read) != payload:
            self.recorder.record_error(
                "files.read", "wrong content", f"read {len(read)} bytes, not what was written"
            )
            return
        self.recorder.record_ok("files.read", time.perf_counter() - started)

    async def _timed(self, operation: str, call: Callable[[], Awaitable[T]]) -> T | None:
        """`call`'s result with its latency recorded, or None with its error recorded."""
        started = time.perf_counter()
        try:
            result = await call()
        except Exception as error:  # any SDK failure is a result to count
            self.recorder.record_error(operation, type(error).__name__, one_line(error))
            return None
        self.recorder.record_ok(operation, time.perf_counter() - started)
        return result
