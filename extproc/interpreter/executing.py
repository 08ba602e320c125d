"""Running one `/execute` on a context's kernel and turning its messages into lines.

The execution holds the kernel's lock from the first message sent until the kernel is idle
again, so the next call starts on a quiet kernel. Three ways it can end early:
- the client goes away (the SDK closes the stream at its own `timeout`): the task running
  this is cancelled, and a background recovery interrupts the kernel, waits for it to go
  idle (restarting it after `interrupt_grace`) and only then releases the lock;
- the server's execution timeout passes: the kernel is interrupted and the interrupt's
  KeyboardInterrupt is reported as a TimeoutError;
- the kernel process dies: it is restarted and the loss is reported as an error line.
`end_of_execution` is the caller's to send, after whatever happened here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from extproc.interpreter import env_code
from extproc.interpreter.contexts import Context
from extproc.interpreter.envs import SandboxEnvs
from extproc.interpreter.kernels import Kernel
from extproc.interpreter.outputs import KEEPALIVE, Line, OutputBudget, error_line, translate
from extproc.interpreter.settings import InterpreterSettings

log = logging.getLogger(__name__)

Emit = Callable[[Line], Awaitable[None]]

# Seconds between liveness checks of a silent kernel.
POLL_SECONDS = 1.0
DEAD_KERNEL = "DeadKernelError"


@dataclass(frozen=True)
class Request:
    code: str
    env_vars: dict[str, str]
    # The caller's credentials, forwarded to envd's GET /envs (see envs.py); kept out of
    # repr so that they never reach a log by accident.
    access_token: str | None = field(repr=False)
    bearer: str | None = field(default=None, repr=False)


class Executor:
    def __init__(self, settings: InterpreterSettings, envs: SandboxEnvs) -> None:
        self._settings = settings
        self._envs = envs
        self._recoveries: set[asyncio.Task[None]] = set()

    async def run(self, context: Context, request: Request, emit: Emit) -> None:
        kernel = context.kernel
        if request.env_vars:
            env_code.check(context.language, request.env_vars)  # InvalidArgument before we start
        await kernel.lock.acquire()
        recovering = False
        msg_id: str | None = None
        try:
            if not await kernel.is_alive():
                await self._restart(kernel)
                await emit(_dead_kernel("before this execution"))
                return
            await self._apply_sandbox_env(context, request)
            if request.env_vars:
                kernel.execute(
                    env_code.set_for_execution(context.language, request.env_vars), silent=True
                )
            msg_id = kernel.execute(request.code)
            await self._stream(kernel, msg_id, emit)
        except asyncio.CancelledError:
            if msg_id is not None:
                recovering = True
                task = asyncio.create_task(
                    self._recover(context, msg_id, bool(request.env_vars)),
                    name="interpreter-recover",
                )
                self._recoveries.add(task)
                task.add_done_callback(self._recoveries.discard)
            raise
        finally:
            if not recovering:
                try:
                    if msg_id is not None and request.env_vars:
                        kernel.execute(env_code.restore(context.language), silent=True)
                    await kernel.drain_shell()
                finally:
                    kernel.lock.release()

    async def _stream(self, kernel: Kernel, msg_id: str, emit: Emit) -> None:
        settings = self._settings
        loop = asyncio.get_running_loop()
        budget = OutputBudget(settings.max_output_bytes)
        last_sent = loop.time()
        deadline = loop.time() + settings.execution_timeout if settings.execution_timeout else None
        interrupted_at: float | None = None
        timed_out_sent = False
        while True:
            # Wake for whichever comes first: a liveness check, a keepalive, the deadline.
            wake = [POLL_SECONDS, last_sent + settings.keepalive_interval - loop.time()]
            if deadline is not None and interrupted_at is None:
                wake.append(deadline - loop.time())
            msg = await kernel.next_message(msg_id, max(min(wake), 0.01))
            now = loop.time()
            if msg is None:
                if not await kernel.is_alive():
                    await self._restart(kernel)
                    await emit(_dead_kernel("while running this code"))
                    return
                if interrupted_at is None and deadline is not None and now >= deadline:
                    interrupted_at = now
                    await kernel.interrupt()
                elif interrupted_at is not None and now - interrupted_at > settings.interrupt_grace:
                    await self._restart(kernel)
                    await emit(_timed_out(settings.execution_timeout, restarted=True))
                    return
                if now - last_sent >= settings.keepalive_interval:
                    await emit(KEEPALIVE)
                    last_sent = now
                continue
            if msg["header"]["msg_type"] == "status":
                if msg["content"].get("execution_state") == "idle":
                    if interrupted_at is not None and not timed_out_sent:
                        # bash_kernel answers an interrupt with no error message at all
                        await emit(_timed_out(settings.execution_timeout, restarted=False))
                    return
                continue
            for line in translate(msg, budget):
                if interrupted_at is not None and line["type"] == "error":
                    line = _timed_out(settings.execution_timeout, restarted=False, of=line)
                    timed_out_sent = True
                await emit(line)
                last_sent = now

    async def _apply_sandbox_env(self, context: Context, request: Request) -> None:
        kernel = context.kernel
        if kernel.sandbox_env_applied or context.language not in env_code.SUPPORTED:
            return
        kernel.sandbox_env_applied = True
        env = await self._envs.fetch(request.access_token, request.bearer)
        if env:
            kernel.execute(env_code.set_for_kernel(context.language, env), silent=True)

    async def _recover(self, context: Context, msg_id: str, restore_env: bool) -> None:
        """After the client left: stop the code, then let the next execution have the kernel."""
        kernel = context.kernel
        try:
            await kernel.interrupt()
            loop = asyncio.get_running_loop()
            give_up = loop.time() + self._settings.interrupt_grace
            while (left := give_up - loop.time()) > 0:
                msg = await kernel.next_message(msg_id, left)
                if msg is None:
                    break
                if (
                    msg["header"]["msg_type"] == "status"
                    and msg["content"].get("execution_state") == "idle"
                ):
                    if restore_env:
                        kernel.execute(env_code.restore(context.language), silent=True)
                    await kernel.drain_shell()
                    return
            log.warning(
                "kernel of context %s did not stop after an interrupt; restarting it", context.id
            )
            await self._restart(kernel)
        except Exception:
            log.exception("recovering the kernel of context %s failed", context.id)
        finally:
            kernel.lock.release()

    async def _restart(self, kernel: Kernel) -> None:
        await kernel.restart(self._settings.kernel_start_timeout)

    async def close(self) -> None:
        for task in list(self._recoveries):
            task.cancel()
        await asyncio.gather(*self._recoveries, return_exceptions=True)


def _dead_kernel(when: str) -> Line:
    return error_line(
        DEAD_KERNEL, f"the kernel died {when} and was restarted; its variables and imports are lost"
    )


def _timed_out(limit: float, *, restarted: bool, of: Line | None = None) -> Line:
    action = "restarted (its state is lost)" if restarted else "interrupted"
    traceback = str(of["traceback"]) if of is not None else ""
    return error_line("TimeoutError", f"execution exceeded {limit:g} s and was {action}", traceback)
