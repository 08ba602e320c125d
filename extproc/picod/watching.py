"""Directory watches: inotify events turned into envd's `FilesystemEvent`s.

envd watches with fsnotify, so the event vocabulary is fsnotify's view of inotify:
IN_CREATE/IN_MOVED_TO -> CREATE, IN_MODIFY -> WRITE, IN_DELETE -> REMOVE, IN_MOVED_FROM ->
RENAME, IN_ATTRIB -> CHMOD, and names are relative to the watched directory ("sub/a.txt"
for a recursive watch). A recursive watch adds a watch for every directory that appears
inside it, as fsnotify's recursive mode does.

The inotify descriptor is read from a loop reader callback, not from a task: `pump()`
drains it synchronously, so a polling caller (GetWatcherEvents) sees every event the kernel
has queued at the moment it asks, without racing a background reader.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from pathlib import Path, PurePosixPath

from asyncinotify import Event, Inotify, Mask

from extproc._gen.filesystem.filesystem_pb import EntryInfo, EventType, FilesystemEvent
from extproc.core.errors import InvalidArgument, NotFound
from extproc.picod.entries import entry_info, is_upload_temp, is_utf8, os_errors

log = logging.getLogger(__name__)

_MASK = Mask.CREATE | Mask.MODIFY | Mask.DELETE | Mask.MOVED_FROM | Mask.MOVED_TO | Mask.ATTRIB
# Events kept for a slow consumer; beyond this new ones are dropped (and logged once):
# envd's buffer is unbounded, but a daemon inside a sandbox must not grow without limit.
MAX_PENDING_EVENTS = 65536
# Rename cookies of our own upload temp files, awaiting their IN_MOVED_TO half.
_MAX_TEMP_COOKIES = 1024
# Filesystems whose change notifications are unreliable (envd refuses them by default).
_NETWORK_FS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "9p", "afs", "glusterfs"}


class DirectoryWatch:
    """An inotify watch on one directory (and its subtree when recursive)."""

    def __init__(self, root: Path, *, recursive: bool, include_entry: bool) -> None:
        self._root = root
        self._recursive = recursive
        self._include_entry = include_entry
        self._inotify: Inotify | None = None
        self._relative: dict[int, PurePosixPath] = {}  # watch descriptor -> dir under root
        self._temp_cookies: dict[int, None] = {}
        self._pending: deque[FilesystemEvent] = deque()
        self._ready = asyncio.Event()
        self._dropped = 0

    @classmethod
    def open(
        cls, root: Path, *, recursive: bool, include_entry: bool, allow_network_mounts: bool
    ) -> DirectoryWatch:
        """Start watching `root`; NotFound / InvalidArgument as envd answers them."""
        with os_errors(root):
            if not root.exists():
                raise NotFound(f"path not found: {root}")
            if not root.is_dir():
                raise InvalidArgument(f"path is not a directory: {root}")
        if not allow_network_mounts and _is_network_mount(root):
            raise InvalidArgument(
                f"path {root} is on a network filesystem; watch it with allow_network_mounts"
            )
        watch = cls(root, recursive=recursive, include_entry=include_entry)
        watch._start()
        return watch

    def _start(self) -> None:
        inotify = Inotify(cache_size=256)
        # asyncinotify's NONBLOCK flag is an alias of CLOEXEC; pump() relies on EAGAIN.
        os.set_blocking(inotify.fd, False)
        self._inotify = inotify
        try:
            with os_errors(self._root):
                self._add(self._root, PurePosixPath())
            if self._recursive:
                self._add_subtree(self._root, PurePosixPath())
        except BaseException:
            inotify.close()
            raise
        asyncio.get_running_loop().add_reader(inotify.fd, self.pump)

    def close(self) -> None:
        if self._inotify is None:
            return
        asyncio.get_running_loop().remove_reader(self._inotify.fd)
        self._inotify.close()
        self._inotify = None
        self._ready.set()  # wake a waiting next_event(), which then reports the end

    @property
    def closed(self) -> bool:
        return self._inotify is None

    def drain(self) -> list[FilesystemEvent]:
        """Every event so far that nobody has taken yet."""
        self.pump()
        events = list(self._pending)
        self._pending.clear()
        return events

    async def next_event(self, idle_seconds: float) -> FilesystemEvent | None:
        """The next event, or None after `idle_seconds` without one (or on close)."""
        while not self._pending:
            if self.closed:
                return None
            self._ready.clear()
            try:
                async with asyncio.timeout(idle_seconds):
                    await self._ready.wait()
            except TimeoutError:
                return None
        return self._pending.popleft()

    def pump(self) -> None:
        """Read and translate everything the kernel has queued (never blocks)."""
        inotify = self._inotify
        if inotify is None:
            return
        while True:
            try:
                event = inotify.sync_get()
            except BlockingIOError:
                break
            if event is not None:
                self._handle(event)
        if self._pending:
            self._ready.set()

    def _add(self, directory: Path, relative: PurePosixPath) -> None:
        assert self._inotify is not None  # only called while open
        watch = self._inotify.add_watch(directory, _MASK | Mask.ONLYDIR | Mask.DONT_FOLLOW)
        self._relative[watch.wd] = relative

    def _add_subtree(self, directory: Path, relative: PurePosixPath) -> None:
        for parent, dirnames, _files in os.walk(directory):
            dirnames[:] = [d for d in dirnames if is_utf8(d)]
            base = relative / PurePosixPath(parent).relative_to(directory)
            for name in dirnames:
                try:
                    self._add(Path(parent) / name, base / name)
                except OSError:
                    continue  # vanished or unreadable: nothing there to watch

    def _forget_subtree(self, relative: PurePosixPath) -> None:
        assert self._inotify is not None
        for watch in self._inotify.watches:
            path = self._relative.get(watch.wd)
            if path is not None and (path == relative or relative in path.parents):
                self._relative.pop(watch.wd, None)
                try:
                    self._inotify.rm_watch(watch)
                except OSError:
                    continue

    def _handle(self, event: Event) -> None:
        mask = event.mask
        watch = event.watch
        if Mask.IGNORED in mask:
            if watch is not None:
                self._relative.pop(watch.wd, None)
            return
        if Mask.Q_OVERFLOW in mask:
            log.warning("inotify queue overflowed watching %s; events were lost", self._root)
            return
        if watch is None or event.name is None or watch.wd not in self._relative:
            return
        name = str(event.name)
        if not is_utf8(name):
            return
        relative = self._relative[watch.wd] / name
        if is_upload_temp(name):
            # Our upload committing: report the rename onto the target as a write of it.
            if Mask.MOVED_FROM in mask:
                self._temp_cookies[event.cookie] = None
                if len(self._temp_cookies) > _MAX_TEMP_COOKIES:
                    del self._temp_cookies[next(iter(self._temp_cookies))]
            return
        is_dir = Mask.ISDIR in mask
        if Mask.MOVED_TO in mask and event.cookie in self._temp_cookies:
            del self._temp_cookies[event.cookie]
            self._emit(relative, EventType.WRITE)
            return
        if Mask.CREATE in mask or Mask.MOVED_TO in mask:
            if is_dir and self._recursive:
                self._add_subtree_root(relative)
            self._emit(relative, EventType.CREATE)
        if Mask.MODIFY in mask:
            self._emit(relative, EventType.WRITE)
        if Mask.DELETE in mask:
            self._emit(relative, EventType.REMOVE)
        if Mask.MOVED_FROM in mask:
            if is_dir and self._recursive:
                self._forget_subtree(relative)
            self._emit(relative, EventType.RENAME)
        if Mask.ATTRIB in mask:
            self._emit(relative, EventType.CHMOD)

    def _add_subtree_root(self, relative: PurePosixPath) -> None:
        directory = self._root / relative
        try:
            self._add(directory, relative)
        except OSError:
            return
        # Entries created before the new watch existed produce no events of their own;
        # watching them still matters for what happens next.
        self._add_subtree(directory, relative)

    def _emit(self, relative: PurePosixPath, kind: EventType) -> None:
        if len(self._pending) >= MAX_PENDING_EVENTS:
            if not self._dropped:
                log.warning("watch on %s is not being read; dropping events", self._root)
            self._dropped += 1
            return
        event = FilesystemEvent(name=str(relative), type=kind)
        if self._include_entry and kind in (EventType.CREATE, EventType.WRITE, EventType.CHMOD):
            entry = _entry_or_none(self._root / relative)
            if entry is not None:
                event.entry = entry
        self._pending.append(event)


def _entry_or_none(path: Path) -> EntryInfo | None:
    try:
        return entry_info(path)
    except OSError:
        return None  # already gone again: the event stays, without an entry


def _is_network_mount(path: Path) -> bool:
    """Whether `path` lives on a network filesystem, per /proc/self/mountinfo."""
    target = os.path.realpath(path)
    best, best_type = "", ""
    try:
        with Path("/proc/self/mountinfo").open(encoding="utf-8", errors="replace") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields = left.split()
                if len(fields) < 5 or not right:
                    continue
                mount_point = _unescape(fields[4])
                inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
                if inside and len(mount_point) >= len(best):
                    best, best_type = mount_point, right.split()[0]
    except OSError:
        return False
    return best_type in _NETWORK_FS or best_type.startswith("fuse")


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal \ooo.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)
