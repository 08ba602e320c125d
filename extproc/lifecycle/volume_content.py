"""The volume content API (../shared/specs/e2b-openapi-volumecontent.yml), served by the
lifecycle service over HTTP/1.1 for Envoy.

Why here and not in the edge: the files are mounted on this machine by this (root) process,
and the bodies are files of any size: Envoy streams them to this server (the route has no
ext_authz and no ext_proc, which would buffer them). Envoy forwards only requests whose path
is `/volumecontent/<id>/(path|dir|file)` and whose `Authorization` is `Bearer vol_<hex>`
(envoy_config/routes.py); everything else stays on the platform route. The token is checked
here, against the volume named in the path (core/volumes.py): a wrong token and a missing
volume get the same 404, so nothing tells a guesser whether a volume exists.

Errors are the platform's JSON (`{"code": <status>, "message": ...}`); a full volume is 507.
Transfers stream in 1 MiB steps, each file operation in a worker thread (volume_files.py
says how paths are walked without following anything).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs

from extproc.core import asgi, asgi_server, errors
from extproc.core.addresses import HostPort
from extproc.core.flags import unix_socket_path
from extproc.core.volumes import CONTENT_PATH_PATTERN
from extproc.lifecycle.volume_files import (
    DIR_MODE,
    FILE_MODE,
    USER_ID,
    VolumeFiles,
    check_owner,
)  # fmt: skip
from extproc.lifecycle.volume_paths import content_path
from extproc.lifecycle.volumes import LocalVolumes

log = logging.getLogger(__name__)
CHUNK = 1024 * 1024
IO_THREADS = 4
T = TypeVar("T")
MAX_JSON_BODY = 64 * 1024
_ROUTE = re.compile(CONTENT_PATH_PATTERN)
# A full volume is 507, as a full disk; a PATCH body over MAX_JSON_BODY is 413.
STATUS = {**asgi.ERROR_STATUS, errors.ResourceExhausted: 507, asgi.BodyTooLarge: 413}
_ALLOWED = {"path": ("GET", "PATCH", "DELETE"), "dir": ("GET", "POST"), "file": ("GET", "PUT")}
_TRUE = ("1", "t", "T", "true", "TRUE", "True")  # Go's strconv.ParseBool, as E2B's server
_FALSE = ("0", "f", "F", "false", "FALSE", "False")


async def _error(send: asgi.Send, error: Exception) -> None:
    status = asgi.status_for(error, STATUS)
    if status is None or not isinstance(error, errors.DomainError):
        status, message = 500, "internal error in the volume content API; see the lifecycle log"
    else:
        message = error.message
    await asgi.send_error(send, status, message)


class _Query:
    """The query string's parameters, each given at most once, UTF-8."""

    def __init__(self, raw: bytes) -> None:
        try:
            text = raw.decode("utf-8")
            self._values: dict[str, list[str]] = parse_qs(
                text, keep_blank_values=True, errors="strict"
            )
        except (UnicodeDecodeError, ValueError) as error:
            raise errors.InvalidArgument("the query string is not valid UTF-8") from error
        for name, values in self._values.items():
            if len(values) > 1:
                raise errors.InvalidArgument(f"query parameter {name!r} is given twice")

    def text(self, name: str) -> str | None:
        values = self._values.get(name)
        return values[0] if values else None

    def path(self) -> tuple[str, ...]:
        raw = self.text("path")
        if raw is None:
            raise errors.InvalidArgument("query parameter 'path' is required")
        return content_path(raw)

    def integer(self, name: str, maximum: int = 2**32 - 1) -> int | None:
        raw = self.text(name)
        if raw is None:
            return None
        if not raw.isascii() or not raw.isdigit() or int(raw) > maximum:
            raise errors.InvalidArgument(f"{name} must be an unsigned 32-bit integer")
        return int(raw)

    def flag(self, name: str) -> bool:
        raw = self.text(name)
        if raw is None or raw in _FALSE:
            return False
        if raw in _TRUE:
            return True
        raise errors.InvalidArgument(f"{name} must be true or false")


def _bearer(scope: asgi.Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            text = bytes(value).decode("latin-1")
            if text[:7].lower() == "bearer ":
                return text[7:].strip()
    return None


class VolumeContentApp:
    """The ASGI app: one volume per request, named in the path, opened by the token."""

    def __init__(self, volumes: LocalVolumes) -> None:
        self._volumes = volumes
        # File work in threads of its own: a transfer stalled on the disk must never hold
        # the default pool the sandboxes' own set-up runs in.
        self._executor = ThreadPoolExecutor(IO_THREADS, thread_name_prefix="volume-content")
        self._operations: dict[tuple[str, str], Callable[..., Awaitable[None]]] = {
            ("path", "GET"): self._stat, ("path", "PATCH"): self._patch,
            ("path", "DELETE"): self._remove, ("dir", "GET"): self._list,
            ("dir", "POST"): self._make_dir, ("file", "GET"): self._read,
            ("file", "PUT"): self._write,
        }  # fmt: skip

    async def _io(self, work: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, work, *args)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def __call__(self, scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send) -> None:
        if scope["type"] != "http":
            return
        route = _ROUTE.fullmatch(scope["path"])
        if route is None:
            await asgi.send_error(send, 404, "no such volume content endpoint")
            return
        volume_id, kind = route.group(1), route.group(2)
        token = _bearer(scope)
        if not token:
            message = "the volume content API needs `Authorization: Bearer <volume token>`"
            await asgi.send_error(send, 401, message)
            return
        volume = self._volumes.for_token(volume_id, token)
        if volume is None:
            await asgi.send_error(send, 404, f"volume {volume_id} not found")
            return
        operation = self._operations.get((kind, scope["method"]))
        if operation is None:
            allowed = ", ".join(_ALLOWED[kind])
            await asgi.send_error(send, 405, f"allowed: {allowed}", ((b"allow", allowed.encode()),))
            return
        started = False

        async def tracked(message: MutableMapping[str, Any]) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            query = _Query(scope.get("query_string", b""))
            await operation(self._volumes.files(volume), query, receive, tracked)
        except ConnectionError:
            if started:
                raise  # mid-body: uvicorn drops the connection, the client sees it cut
            # the client went away mid-upload: nobody to answer
        except Exception as error:
            if not isinstance(error, errors.DomainError):
                log.exception("volume content %s %s failed", scope["method"], scope["path"])
            if started:
                raise
            await _error(send, error)

    # -- operations -----------------------------------------------------------------------

    async def _stat(
        self, files: VolumeFiles, query: _Query, receive: asgi.Receive, send: asgi.Send
    ) -> None:
        entry = await self._io(files.stat, query.path())
        await asgi.send_json(send, 200, entry.json())

    async def _patch(
        self, files: VolumeFiles, query: _Query, receive: asgi.Receive, send: asgi.Send
    ) -> None:
        parts = query.path()
        raw = await asgi.read_body(receive, MAX_JSON_BODY)
        try:
            body = json.loads(raw or b"{}")
        except ValueError as error:
            raise errors.InvalidArgument(f"request body is not valid JSON: {error}") from error
        if not isinstance(body, dict):
            raise errors.InvalidArgument("request body must be a JSON object")
        values: dict[str, int | None] = {}
        for name in ("uid", "gid", "mode"):
            value = body.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise errors.InvalidArgument(f"{name} must be an integer")
            values[name] = value
        check_owner(values["uid"], values["gid"], values["mode"])
        entry = await self._io(
            files.set_metadata, parts, values["uid"], values["gid"], values["mode"]
        )
        await asgi.send_json(send, 200, entry.json())

    async def _remove(
        self, files: VolumeFiles, query: _Query, receive: asgi.Receive, send: asgi.Send
    ) -> None:
        await self._io(files.remove, query.path())
        await asgi.respond(send, 204)

    async def _list(
        self, files: VolumeFiles, query: _Query, receive: asgi.Receive, send: asgi.Send
    ) -> None:
        depth = query.integer("depth")
        listed = await self._io(files.list_dir, query.path(), 1 if depth is None else depth)
        await asgi.send_json(send, 200, [entry.json() for entry in listed])

    def _new_entry(self, query: _Query, mode: int) -> tuple[tuple[str, ...], int, int, int, bool]:
        """What creating a directory or file takes from the query: its path, owner, mode
        (default `mode`) and `force`."""
        parts = query.path()
        uid, gid, asked = query.integer("uid"), query.integer("gid"), query.integer("mode")
        check_owner(uid, gid, asked)
        return (parts, USER_ID if uid is None else uid, USER_ID if gid is None else gid,
                mode if asked is None else asked, query.flag("force"))  # fmt: skip

    async def _make_dir(
        self, files: VolumeFiles, query: _Query, receive: asgi.Receive, send: asgi.Send
    ) -> None:
        entry = await self._io(files.make_dir, *self._new_entry(query, DIR_MODE))
        await asgi.send_json(send, 201, entry.json())

    async def _read(
        self, files: VolumeFiles, query: _Query, receive: asgi.Receive, send: asgi.Send
    ) -> None:
        fd, size = await self._io(files.open_read, query.path())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"application/octet-stream"),
                (b"content-length", str(size).encode())]})  # fmt: skip
            offset = 0
            while offset < size:
                chunk = await self._io(os.pread, fd, min(CHUNK, size - offset), offset)
                if not chunk:
                    raise ConnectionAbortedError("the file shrank while it was read")
                offset += len(chunk)
                await send({"type": "http.response.body", "body": chunk,
                            "more_body": offset < size})  # fmt: skip
            if size == 0:
                await send({"type": "http.response.body", "body": b""})
        finally:
            os.close(fd)

    async def _write(
        self, files: VolumeFiles, query: _Query, receive: asgi.Receive, send: asgi.Send
    ) -> None:
        upload = await self._io(files.begin_write, *self._new_entry(query, FILE_MODE))
        try:
            pending: list[bytes] = []
            buffered = 0
            async for chunk in asgi.body_chunks(receive):
                pending.append(chunk)
                buffered += len(chunk)
                if buffered >= CHUNK:
                    await self._io(upload.write, b"".join(pending))
                    pending, buffered = [], 0
            if pending:
                await self._io(upload.write, b"".join(pending))
            entry = await self._io(upload.finish)
        finally:
            await self._io(upload.abort)
        await asgi.send_json(send, 201, entry.json())


def _unix_listener(path: Path) -> socket.socket:
    """A listening unix socket made 0600 before anyone can connect (the run directory is
    0700 too): only the gateway's user (Envoy) reaches the content API this way."""
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        os.fchmod(listener.fileno(), 0o600)
        listener.bind(str(path))
        path.chmod(0o600)
        listener.listen(1024)
    except BaseException:
        listener.close()
        raise
    return listener


@contextlib.asynccontextmanager
async def serving(volumes: LocalVolumes, listen: str) -> AsyncIterator[None]:
    """Serve the content API on `listen` (unix:PATH or HOST:PORT) while inside."""
    path = unix_socket_path(listen)
    sockets = [_unix_listener(path)] if path is not None else None
    tcp = HostPort("127.0.0.1", 0) if path is not None else HostPort.parse(listen, port_zero=True)
    app = VolumeContentApp(volumes)
    config = asgi_server.config(app, tcp.host, tcp.port, grace_s=5, date_header=False)
    server = asgi_server.Server(config)
    task = asyncio.create_task(server.serve(sockets), name="volume-content")
    listening = asyncio.create_task(server.listening.wait())
    await asyncio.wait([task, listening], return_when=asyncio.FIRST_COMPLETED)
    listening.cancel()
    if task.done():
        task.result()  # it failed to start: say why
        raise RuntimeError("the volume content server stopped at start")
    log.info("volume content API listening on %s", path or listen)
    try:
        yield
    finally:
        server.should_exit = True
        await asyncio.gather(task, return_exceptions=True)
        app.close()
        if path is not None:
            path.unlink(missing_ok=True)
