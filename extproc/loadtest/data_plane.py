"""The `data-plane` scenario: small envd requests at a fixed rate against running sandboxes.

The load is open-loop: request i is due at `start + i / rate` whether or not earlier ones
have been answered, and its latency is measured from when it was due, not from when a
connection became free. A closed loop (send, wait, send) slows down with the gateway and so
hides the queueing a slow answer causes (coordinated omission). Due requests wait in a
bounded queue for one of `connections` workers, each holding one keep-alive connection;
when the queue is full (it holds two seconds' worth of due requests) a due request is
dropped and counted, so the report shows the rate the gateway kept up with. Times are read
from `time.perf_counter`: the event loop's clock is cached per iteration, in milliseconds
under uvloop, which is coarser than the requests being timed.

Sandboxes are created with the SDK before the measured window and killed after it, so the
window holds envd traffic only; the SDK also gives each request's URL and headers, so the
requests are routed exactly as the SDK's own would be (by host, or by `E2b-Sandbox-Id`
headers to `E2B_SANDBOX_URL`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from dataclasses import dataclass

from e2b import AsyncSandbox
from e2b.envd.utils import authentication_header

from extproc.loadtest.gateway_env import one_line
from extproc.loadtest.http1 import Http1Connection, Origin, request_bytes
from extproc.loadtest.recording import Recorder
from extproc.loadtest.settings import DataPlaneSettings, LoadtestError

# the queue of due requests holds this many seconds' worth of them
_BACKLOG_S = 2.0
_MIN_BACKLOG = 1000
# seconds the workers get after the window to finish what was already due
_DRAIN_S = 5.0


@dataclass(frozen=True)
class EnvdTarget:
    """One sandbox's envd, and the request to send it, as bytes."""

    sandbox_id: str
    origin: Origin
    request: bytes


def envd_target(sandbox: AsyncSandbox, request: str) -> EnvdTarget:
    """The request the SDK would send this sandbox's envd: its URL, routing headers, access
    token and user."""
    origin = Origin.from_url(sandbox.envd_api_url)
    headers = dict(sandbox.connection_config.sandbox_headers)
    # the SDK's own Basic header for user `user`; the version only matters without a user
    headers.update(authentication_header(sandbox._envd_version, "user"))
    if request == "health":
        raw = request_bytes("GET", origin, "/health", headers)
        return EnvdTarget(sandbox.sandbox_id, origin, raw)
    headers |= {"Content-Type": "application/json", "Connect-Protocol-Version": "1"}
    body = b'{"path":"/"}'
    raw = request_bytes("POST", origin, "/filesystem.Filesystem/Stat", headers, body)
    return EnvdTarget(sandbox.sandbox_id, origin, raw)


async def create_sandboxes(count: int, template: str, timeout_s: int) -> list[AsyncSandbox]:
    """`count` sandboxes, or none and LoadtestError naming why the first failure failed."""
    results = await asyncio.gather(
        *(AsyncSandbox.create(template, timeout=timeout_s) for _ in range(count)),
        return_exceptions=True,
    )
    sandboxes = [result for result in results if isinstance(result, AsyncSandbox)]
    failures = [result for result in results if isinstance(result, BaseException)]
    if failures:
        await kill_sandboxes(sandboxes)
        raise LoadtestError(
            f"could not create the data-plane sandboxes ({len(failures)} of {count} failed): "
            f"{one_line(failures[0])}"
        )
    return sandboxes


async def kill_sandboxes(sandboxes: list[AsyncSandbox]) -> list[str]:
    """Kill each; what failed, as one line each (their timeouts end them anyway)."""
    results = await asyncio.gather(
        *(sandbox.kill() for sandbox in sandboxes), return_exceptions=True
    )
    return [
        f"could not kill sandbox {sandbox.sandbox_id}: {one_line(result)}"
        for sandbox, result in zip(sandboxes, results, strict=True)
        if isinstance(result, BaseException)
    ]


class PacedLoad:
    """Requests due at a fixed rate, spread over the targets, answered by a worker pool."""

    def __init__(
        self,
        targets: list[EnvdTarget],
        settings: DataPlaneSettings,
        recorder: Recorder,
        stop: asyncio.Event,
    ) -> None:
        self.targets = targets
        self.settings = settings
        self.recorder = recorder
        self.stop = stop
        self.operation = f"envd {settings.request}"
        self.due = 0
        self.dropped = 0
        self.unfinished = 0
        backlog = max(_MIN_BACKLOG, int(settings.rate * _BACKLOG_S))
        self._queue: asyncio.Queue[float] = asyncio.Queue(backlog)
        self._tls = ssl.create_default_context()

    async def run(self, duration_s: float) -> None:
        workers = [
            asyncio.create_task(
                self._work(self.targets[index % len(self.targets)]),
                name=f"loadtest-worker-{index}",
            )
            for index in range(self.settings.connections)
        ]
        try:
            await self._schedule(duration_s)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_DRAIN_S):
                    await self._queue.join()
            # what is still queued is not sent; what is on a connection gets its answer, so
            # that Envoy sees no request cut off by the end of the run
            while not self._queue.empty():
                self._queue.get_nowait()
                self._queue.task_done()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.request_timeout_s):
                    await self._queue.join()
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            operation = self.recorder.operations.get(self.operation)
            answered = 0 if operation is None else len(operation.seconds) + operation.errors
            # still queued, or on a connection when the drain ran out
            self.unfinished = self.due - self.dropped - answered

    async def _schedule(self, duration_s: float) -> None:
        """Put each request in the queue when it falls due, in batches of what is due (a
        sleep per request would cost more than the request at a few thousand a second)."""
        rate = self.settings.rate
        start = time.perf_counter()
        total = int(duration_s * rate)
        while self.due < total and not self.stop.is_set():
            now = time.perf_counter()
            due_now = min(total, int((now - start) * rate) + 1)
            while self.due < due_now:
                try:
                    self._queue.put_nowait(start + self.due / rate)
                except asyncio.QueueFull:
                    self.dropped += 1
                self.due += 1
            await asyncio.sleep(max(0.0, start + self.due / rate - time.perf_counter()))

    async def _work(self, target: EnvdTarget) -> None:
        connection: Http1Connection | None = None
        try:
            while True:
                due = await self._queue.get()
                try:
                    if connection is None or connection.closed:
                        connection = await Http1Connection.open(target.origin, self._tls)
                    async with asyncio.timeout(self.settings.request_timeout_s):
                        status = await connection.exchange(target.request)
                except (OSError, TimeoutError) as error:
                    if connection is not None:
                        connection.close()
                    connection = None
                    kind = "timeout" if isinstance(error, TimeoutError) else type(error).__name__
                    self.recorder.record_error(self.operation, kind, one_line(error))
                else:
                    if 200 <= status < 300:
                        self.recorder.record_ok(self.operation, time.perf_counter() - due)
                    else:
                        self.recorder.record_error(
                            self.operation, f"HTTP {status}", f"{target.sandbox_id}: {status}"
                        )
                finally:
                    self._queue.task_done()
        finally:
            if connection is not None:
                connection.close()
