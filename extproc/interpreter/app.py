"""The interpreter's ASGI app: E2B's code-interpreter routes, written directly on ASGI.

A framework would add little for six routes, and writing the streaming response by hand
lets `/execute` flush each NDJSON line the moment the kernel produces it and notice the
client leaving while the kernel is silent (a task waits on `receive()` for the disconnect
alongside the execution, which it then cancels; see `executing`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re

from extproc.core.asgi import (
    ClientDisconnected,
    Receive,
    Scope,
    Send,
    read_body,
    respond,
    send_json,
)
from extproc.core.daemon_auth import credentials
from extproc.core.errors import DomainError, InvalidArgument, NotFound
from extproc.interpreter import env_code
from extproc.interpreter.auth import Authenticator
from extproc.interpreter.contexts import Contexts
from extproc.interpreter.executing import Executor, Request
from extproc.interpreter.outputs import END_OF_EXECUTION, Line, error_line
from extproc.interpreter.settings import InterpreterSettings
from extproc.interpreter.wire import json_object, optional_str, send_error, string_map

CONTEXT_PATH = re.compile(r"^/contexts/(?P<id>[^/]+)(?P<restart>/restart)?$")
NDJSON_HEADERS = [(b"content-type", b"application/x-ndjson"), (b"cache-control", b"no-store")]


class InterpreterApp:
    def __init__(
        self, settings: InterpreterSettings, contexts: Contexts, executor: Executor
    ) -> None:
        self._settings = settings
        self._contexts = contexts
        self._executor = executor
        self._auth = Authenticator(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        try:
            self._auth.check(scope["path"], scope["headers"])
            await self._route(scope, receive, send)
        except DomainError as e:
            await send_error(send, e)
        except ClientDisconnected:
            pass  # it left mid-body: nobody to answer

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        method: str = scope["method"]
        path: str = scope["path"]
        if path == "/health" and method in ("GET", "HEAD"):
            await send_json(send, 200, {"status": "ok"})
        elif path == "/execute" and method == "POST":
            await self._execute(scope, receive, send)
        elif path == "/contexts" and method == "POST":
            body = json_object(await self._body(receive), empty_ok=True)
            context = await self._contexts.create(
                optional_str(body, "language"), optional_str(body, "cwd")
            )
            await send_json(send, 200, context.to_json())
        elif path == "/contexts" and method == "GET":
            await send_json(send, 200, [c.to_json() for c in self._contexts.list()])
        elif (match := CONTEXT_PATH.match(path)) and method == "DELETE" and not match["restart"]:
            await self._contexts.remove(match["id"])
            await respond(send, 204)
        elif match and method == "POST" and match["restart"]:
            await self._contexts.restart(match["id"])
            await respond(send, 204)
        else:
            raise NotFound(f"no route for {method} {path}")

    async def _body(self, receive: Receive) -> bytes:
        return await read_body(receive, self._settings.max_body_bytes)

    async def _execute(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = json_object(await self._body(receive))
        code = body.get("code")
        if not isinstance(code, str):
            raise InvalidArgument("'code' must be a string")
        context_id = optional_str(body, "context_id")
        language = optional_str(body, "language")
        if context_id and language:
            raise InvalidArgument("give context_id or language, not both")
        env_vars = string_map(body, "env_vars")
        if context_id:
            context = self._contexts.get(context_id)
        else:
            context = await self._contexts.default(language)
        if env_vars:
            env_code.check(context.language, env_vars)  # 400 now, not mid-stream
        presented = credentials(scope["headers"])
        request = Request(code, env_vars, _text(presented.access_token), _text(presented.bearer))

        await send({"type": "http.response.start", "status": 200, "headers": NDJSON_HEADERS})

        async def emit(line: Line) -> None:
            await send({"type": "http.response.body", "body": _line(line), "more_body": True})

        running = asyncio.create_task(self._executor.run(context, request, emit), name="execute")
        leaving = asyncio.create_task(_disconnected(receive), name="execute-disconnect")
        try:
            await asyncio.wait({running, leaving}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            leaving.cancel()
            if not running.done():
                # The client left (or the server is stopping): cancelling starts the
                # kernel's recovery, see executing.
                running.cancel()
        if running.cancelled() or not running.done():
            with contextlib.suppress(asyncio.CancelledError):
                await running
            return
        try:
            running.result()
        except DomainError as e:
            await emit(error_line(type(e).__name__, e.message))
        except OSError:
            return  # the connection broke while writing: nobody to tell
        await send({"type": "http.response.body", "body": _line(END_OF_EXECUTION)})


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _text(header: bytes | None) -> str | None:
    return None if header is None else header.decode("latin-1")


def _line(line: Line) -> bytes:
    return (json.dumps(line) + "\n").encode()
