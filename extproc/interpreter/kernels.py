"""One Jupyter kernel: its process (AsyncKernelManager) and its channels (AsyncKernelClient).

Kernels talk ZeroMQ over IPC sockets in a private runtime directory rather than TCP: no
port has to be picked and then bound by another process (jupyter_client's known race), and
nothing listens on the sandbox's network. The heartbeat channel is off; liveness is the
kernel process itself (`is_alive` polls it), which is cheaper and just as exact locally.
Which kernel and with what environment is kernel_specs' to say.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from queue import Empty
from typing import Any

from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.manager import AsyncKernelManager

from extproc.core.errors import Unavailable
from extproc.interpreter.kernel_specs import KernelSpecs

log = logging.getLogger(__name__)

Message = dict[str, Any]


class Kernel:
    """A started kernel. Executions on it are serialised by `lock` (Jupyter runs one at a
    time anyway; holding the lock keeps one execution's messages from another's reader)."""

    def __init__(self, specs: KernelSpecs, spec_name: str, cwd: Path, socket_prefix: Path) -> None:
        self.spec_name = spec_name
        self._specs = specs
        self.cwd = cwd
        self.lock = asyncio.Lock()
        # Set once the sandbox's env vars were applied to this kernel process.
        self.sandbox_env_applied = False
        self._socket_prefix = socket_prefix
        self._manager: AsyncKernelManager | None = None
        self._client: AsyncKernelClient | None = None

    async def start(self, ready_within: float) -> None:
        manager = AsyncKernelManager(
            kernel_name=self.spec_name,
            kernel_spec_manager=self._specs.manager,
            transport="ipc",
        )
        manager.ip = str(self._socket_prefix)
        try:
            await manager.start_kernel(
                cwd=str(self.cwd), env=self._specs.environment(self.spec_name)
            )
        except Exception as e:
            raise Unavailable(f"the {self.spec_name} kernel did not start: {e}") from e
        client: AsyncKernelClient = manager.client()
        client.start_channels(stdin=False, hb=False)
        try:
            await client.wait_for_ready(timeout=ready_within)
        except RuntimeError as e:
            client.stop_channels()
            await manager.shutdown_kernel(now=True)
            raise Unavailable(f"the {self.spec_name} kernel did not become ready: {e}") from e
        self._manager, self._client = manager, client
        self.sandbox_env_applied = False

    async def shutdown(self) -> None:
        client, manager = self._client, self._manager
        self._client = self._manager = None
        if client is not None:
            client.stop_channels()
        if manager is not None:
            with contextlib.suppress(Exception):  # already gone is fine: we wanted it gone
                await manager.shutdown_kernel(now=True)

    async def restart(self, ready_within: float) -> None:
        """A fresh process with fresh channels: state and stale messages are dropped."""
        await self.shutdown()
        await self.start(ready_within)

    async def is_alive(self) -> bool:
        return self._manager is not None and bool(await self._manager.is_alive())

    async def interrupt(self) -> None:
        if self._manager is not None:
            with contextlib.suppress(Exception):  # a dead kernel is handled by the caller
                await self._manager.interrupt_kernel()

    def execute(self, code: str, *, silent: bool = False) -> str:
        """Send an execute_request; returns its msg_id (replies are matched on it)."""
        msg_id: str = self._channels.execute(
            code, silent=silent, store_history=not silent, allow_stdin=False, stop_on_error=False
        )
        return msg_id

    async def next_message(self, msg_id: str, wait: float) -> Message | None:
        """The next iopub message of `msg_id`, or None after `wait` seconds of nothing.

        Messages of other requests (a silent helper, an abandoned run) are dropped here.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            left = deadline - loop.time()
            if left <= 0:
                return None
            try:
                msg: Message = await self._channels.get_iopub_msg(timeout=left)
            except Empty:
                return None
            if msg.get("parent_header", {}).get("msg_id") == msg_id:
                return msg

    async def drain_shell(self) -> None:
        """Drop queued execute_replies: every output already came on iopub."""
        while True:
            try:
                await self._channels.get_shell_msg(timeout=0)
            except Empty:
                return

    @property
    def _channels(self) -> AsyncKernelClient:
        if self._client is None:
            raise Unavailable(f"the {self.spec_name} kernel is not running")
        return self._client
