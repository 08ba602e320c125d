"""Serving the interpreter: uvicorn in-process (core/asgi_server.py), a warm default
kernel, a bounded shutdown.

The default Python context starts as a named task right after the socket is bound, so
`/health` answers at once and the first `run_code` waits only for whatever is left of the
kernel's start. On SIGTERM/SIGINT uvicorn stops taking requests, open streams get
SHUTDOWN_GRACE_SECONDS, then every kernel is shut down: none outlives the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import tempfile
from pathlib import Path

from extproc.core import asgi_server
from extproc.core.request_context import AsgiRequestContext
from extproc.interpreter.app import InterpreterApp
from extproc.interpreter.contexts import Contexts
from extproc.interpreter.envs import SandboxEnvs
from extproc.interpreter.executing import Executor
from extproc.interpreter.settings import InterpreterSettings

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 3.0


async def _warm(contexts: Contexts) -> None:
    try:
        await contexts.default(None)
    except Exception:
        # Not fatal: the first request tries again and reports why it failed.
        log.exception("the default Python context did not start")


async def run(settings: InterpreterSettings) -> None:
    # Kernels write their IPC sockets and connection files here, readable by us only.
    runtime_dir = Path(tempfile.mkdtemp(prefix="agentcube-interpreter-"))
    # jupyter_core warns until platformdirs paths are opted into; we want them anyway.
    os.environ.setdefault("JUPYTER_PLATFORM_DIRS", "1")
    contexts = Contexts(settings, runtime_dir)
    envs = SandboxEnvs(settings.envd_url)
    executor = Executor(settings, envs)
    config = asgi_server.config(
        AsgiRequestContext(InterpreterApp(settings, contexts, executor)),
        settings.host,
        settings.port,
        grace_s=SHUTDOWN_GRACE_SECONDS,
        timeout_keep_alive=650,  # above the gateway's idle timeouts: reuse, do not race
    )
    server = asgi_server.Server(config)
    loop = asyncio.get_running_loop()
    if settings.jwt_public_key and settings.sandbox_id is None:
        log.info(
            "no sandbox id: refusing every request but /health until %s binds one",
            settings.binding_file,
        )

    def on_signal() -> None:
        if server.should_exit:
            server.force_exit = True  # a second signal: stop waiting for streams
        server.should_exit = True

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal)
    warming = asyncio.create_task(_warm(contexts), name="interpreter-warm-kernel")
    try:
        await server.serve()
    finally:
        warming.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await warming
        await executor.close()
        await contexts.close()
        await envs.close()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await asyncio.to_thread(shutil.rmtree, runtime_dir, ignore_errors=True)
