"""The `filesystem.Filesystem` Connect service, as envd implements it.

Each call resolves its path for the requesting user (Basic auth, or the gateway's user
header), does the work in a thread (filesystem calls block), and answers with envd's
EntryInfo. Things this daemon creates belong to that user when it runs as root, as envd
chowns them. Errors are domain errors (or OSErrors) that rpc_errors maps to Connect codes.

Watches come in envd's two shapes: WatchDir streams events (the async SDK), and
CreateWatcher / GetWatcherEvents / RemoveWatcher keep a watch server-side for the sync SDK
to poll. Polled watchers live until removed or until the service is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from connectrpc.request import RequestContext
from protobuf import Oneof

from extproc._gen.filesystem.filesystem_pb import (
    CreateWatcherRequest,
    CreateWatcherResponse,
    EntryInfo,
    GetWatcherEventsRequest,
    GetWatcherEventsResponse,
    ListDirRequest,
    ListDirResponse,
    MakeDirRequest,
    MakeDirResponse,
    MoveRequest,
    MoveResponse,
    RemoveRequest,
    RemoveResponse,
    RemoveWatcherRequest,
    RemoveWatcherResponse,
    StatRequest,
    StatResponse,
    WatchDirRequest,
    WatchDirResponse,
)
from extproc.core.errors import AlreadyExists, InvalidArgument, NotFound
from extproc.picod.entries import entry_info, list_entries, make_dirs, os_errors
from extproc.picod.environment import Environment
from extproc.picod.processes import CLIENT_WATCH
from extproc.picod.settings import PicodSettings
from extproc.picod.users import User, requested_user_in, resolve_user
from extproc.picod.watching import DirectoryWatch

# envd's keepalive period on streams when the client sends no Keepalive-Ping-Interval.
DEFAULT_KEEPALIVE_SECONDS = 90.0
KEEPALIVE_HEADER = "keepalive-ping-interval"


class FilesystemService:
    def __init__(self, settings: PicodSettings, environment: Environment) -> None:
        self._settings = settings
        self._environment = environment
        self._watchers: dict[str, DirectoryWatch] = {}

    def close(self) -> None:
        """Stop every polled watcher (app shutdown)."""
        for watch in self._watchers.values():
            watch.close()
        self._watchers.clear()

    def _user(self, ctx: RequestContext[Any, Any]) -> User:
        return resolve_user(self._environment, requested_user_in(ctx.request_headers))

    async def stat(
        self, request: StatRequest, ctx: RequestContext[StatRequest, StatResponse]
    ) -> StatResponse:
        path = self._user(ctx).resolve_path(request.path)
        return StatResponse(entry=await asyncio.to_thread(_entry, path))

    async def make_dir(
        self, request: MakeDirRequest, ctx: RequestContext[MakeDirRequest, MakeDirResponse]
    ) -> MakeDirResponse:
        user = self._user(ctx)
        path = user.resolve_path(request.path)
        owner = _owner(user)

        def work() -> MakeDirResponse:
            with os_errors(path):
                if path.is_dir():
                    raise AlreadyExists(f"directory already exists: {path}")
                if path.exists() or path.is_symlink():
                    raise InvalidArgument(f"path already exists and is not a directory: {path}")
                make_dirs(path, owner)
                return MakeDirResponse(entry=entry_info(path))

        return await asyncio.to_thread(work)

    async def move(
        self, request: MoveRequest, ctx: RequestContext[MoveRequest, MoveResponse]
    ) -> MoveResponse:
        user = self._user(ctx)
        source = user.resolve_path(request.source)
        destination = user.resolve_path(request.destination)
        owner = _owner(user)

        def work() -> MoveResponse:
            with os_errors(source):
                os.lstat(source)
            with os_errors(destination):
                make_dirs(destination.parent, owner)
                try:
                    source.rename(destination)
                except OSError as e:
                    if e.errno != errno.EXDEV:  # another filesystem: copy, then delete
                        raise
                    shutil.move(source, destination)
                return MoveResponse(entry=entry_info(destination))

        return await asyncio.to_thread(work)

    async def list_dir(
        self, request: ListDirRequest, ctx: RequestContext[ListDirRequest, ListDirResponse]
    ) -> ListDirResponse:
        path = self._user(ctx).resolve_path(request.path)
        depth = max(request.depth, 1)  # envd treats 0 (unset) as 1

        def work() -> ListDirResponse:
            with os_errors(path):
                if not path.exists():
                    raise NotFound(f"path not found: {path}")
                if not path.is_dir():
                    raise InvalidArgument(f"path is not a directory: {path}")
                return ListDirResponse(entries=list_entries(path, depth))

        return await asyncio.to_thread(work)

    async def remove(
        self, request: RemoveRequest, ctx: RequestContext[RemoveRequest, RemoveResponse]
    ) -> RemoveResponse:
        path = self._user(ctx).resolve_path(request.path)

        def work() -> None:
            # envd removes idempotently: a path that is already gone is no error.
            with os_errors(path), contextlib.suppress(FileNotFoundError):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()

        await asyncio.to_thread(work)
        return RemoveResponse()

    async def watch_dir(
        self, request: WatchDirRequest, ctx: RequestContext[WatchDirRequest, WatchDirResponse]
    ) -> AsyncIterator[WatchDirResponse]:
        path = self._user(ctx).resolve_path(request.path)
        interval = _keepalive_seconds(ctx)
        watch = DirectoryWatch.open(
            path,
            recursive=request.recursive,
            include_entry=request.include_entry,
            allow_network_mounts=request.allow_network_mounts,
        )
        # connectrpc notices a disconnect only when we yield; the app's client watch tells
        # us at once, so a gone client's inotify watch is closed now, not a keepalive later.
        client = CLIENT_WATCH.get()
        if client is not None:
            client.on_gone(watch.close)
        try:
            yield WatchDirResponse(event=Oneof("start", WatchDirResponse.StartEvent()))
            while True:
                event = await watch.next_event(interval)
                if watch.closed:
                    return
                if event is None:
                    yield WatchDirResponse(event=Oneof("keepalive", WatchDirResponse.KeepAlive()))
                else:
                    yield WatchDirResponse(event=Oneof("filesystem", event))
        finally:
            watch.close()

    async def create_watcher(
        self,
        request: CreateWatcherRequest,
        ctx: RequestContext[CreateWatcherRequest, CreateWatcherResponse],
    ) -> CreateWatcherResponse:
        path = self._user(ctx).resolve_path(request.path)
        watch = DirectoryWatch.open(
            path,
            recursive=request.recursive,
            include_entry=request.include_entry,
            allow_network_mounts=request.allow_network_mounts,
        )
        watcher_id = secrets.token_hex(10)
        self._watchers[watcher_id] = watch
        return CreateWatcherResponse(watcher_id=watcher_id)

    async def get_watcher_events(
        self,
        request: GetWatcherEventsRequest,
        ctx: RequestContext[GetWatcherEventsRequest, GetWatcherEventsResponse],
    ) -> GetWatcherEventsResponse:
        watch = self._watchers.get(request.watcher_id)
        if watch is None:
            raise NotFound(f"watcher with id {request.watcher_id} not found")
        return GetWatcherEventsResponse(events=watch.drain())

    async def remove_watcher(
        self,
        request: RemoveWatcherRequest,
        ctx: RequestContext[RemoveWatcherRequest, RemoveWatcherResponse],
    ) -> RemoveWatcherResponse:
        watch = self._watchers.pop(request.watcher_id, None)
        if watch is None:
            raise NotFound(f"watcher with id {request.watcher_id} not found")
        watch.close()
        return RemoveWatcherResponse()


def _entry(path: Path) -> EntryInfo:
    with os_errors(path):
        return entry_info(path)


def _owner(user: User) -> tuple[int, int] | None:
    """Who should own what we create: the user, when we are root and can give it away."""
    return (user.uid, user.gid) if os.geteuid() == 0 else None


def _keepalive_seconds(ctx: RequestContext[Any, Any]) -> float:
    raw = ctx.request_headers.get(KEEPALIVE_HEADER)
    try:
        seconds = float(raw) if raw else DEFAULT_KEEPALIVE_SECONDS
    except ValueError:
        return DEFAULT_KEEPALIVE_SECONDS
    return seconds if 0 < seconds < 86400 else DEFAULT_KEEPALIVE_SECONDS
