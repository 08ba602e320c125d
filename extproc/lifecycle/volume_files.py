"""A volume's files as the content API sees them: every step relative to a directory fd.

This runs as host root on a tree that sandboxes (strangers' code) write to, so nothing here
resolves a path the way `open(path)` would:

- a content path is walked one name at a time from the volume root's fd, each with
  `O_NOFOLLOW | O_DIRECTORY`: a symlink anywhere on the way is refused (ELOOP), never
  followed, whether it points outside the volume or not. Swapping a directory for a symlink
  mid-request changes nothing: the walk holds fds, not names. `..` never gets here
  (`volume_paths`), and the volume is a filesystem of its own, so no rename or hard link
  can move an entry in or out of it (EXDEV);
- the last name is acted on through its parent's fd with `follow_symlinks=False` (stat,
  chown, unlink), `O_NOFOLLOW` (open), or fd-based `shutil.rmtree`; a symlink itself can be
  listed, stat'ed, chown'ed and removed, never read or written through;
- reads open only regular files (checked with `lstat` before the open and `fstat` after,
  `O_NONBLOCK` so a FIFO planted under the name cannot hang the server);
- writes go to an `O_TMPFILE` in the parent, get their owner and mode by fd, and are renamed
  over the name: a reader never sees half a file, and an existing symlink under the name
  is replaced, not written through;
- the root is checked to be the volume's own mount, not the empty directory beneath it.

Owners are the ids inside sandboxes (0 root, 1000 `user`), which is what the volume's
filesystem stores (`volume_mounting`); new entries default to `user`, so a sandbox's default
user can change what the API wrote.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from extproc.core.errors import (
    Conflict,
    DomainError,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)  # fmt: skip
from extproc.core.os_errors import reraised
from extproc.lifecycle.volume_paths import shown

USER_ID = 1000  # `user` inside every sandbox
MAX_ID = 65535  # the ids a sandbox's user namespace maps
MAX_LISTED = 10_000
MAX_DEPTH = 64
FILE_MODE = 0o644
DIR_MODE = 0o755
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_TYPES = {stat.S_IFREG: "file", stat.S_IFDIR: "directory", stat.S_IFLNK: "symlink"}


@dataclass(frozen=True)
class Entry:
    name: str
    type: str
    path: str
    size: int
    mode: int
    uid: int
    gid: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    target: str | None = None

    def json(self) -> dict[str, Any]:
        """E2B's VolumeEntryStat."""
        body: dict[str, Any] = {
            "name": self.name, "type": self.type, "path": self.path, "size": self.size,
            "mode": self.mode, "uid": self.uid, "gid": self.gid,
            "atime": _rfc3339(self.atime_ns), "mtime": _rfc3339(self.mtime_ns),
            "ctime": _rfc3339(self.ctime_ns),
        }  # fmt: skip
        if self.target is not None:
            body["target"] = self.target
        return body


def _rfc3339(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat().replace("+00:00", "Z")


def _entry(parts: tuple[str, ...], st: os.stat_result, target: str | None = None) -> Entry:
    return Entry(
        name=parts[-1] if parts else "/", type=_TYPES.get(stat.S_IFMT(st.st_mode), "unknown"),
        path=shown(parts), size=st.st_size, mode=stat.S_IMODE(st.st_mode), uid=st.st_uid,
        gid=st.st_gid, atime_ns=st.st_atime_ns, mtime_ns=st.st_mtime_ns,
        ctime_ns=st.st_ctime_ns, target=target,
    )  # fmt: skip


def domain_error(error: OSError, parts: tuple[str, ...]) -> DomainError | None:
    """What a file operation's failure means to the caller; None: nothing known."""
    where = shown(parts)
    if error.errno in (errno.ENOENT, errno.ENOTDIR):
        return NotFound(f"path {where} not found")
    if error.errno == errno.ELOOP:
        return InvalidArgument(
            f"path {where} is or crosses a symlink; the volume content API does not follow symlinks"
        )
    if error.errno == errno.EISDIR:
        return InvalidArgument(f"path {where} is a directory")
    if error.errno in (errno.EEXIST, errno.ENOTEMPTY):
        return Conflict(f"path {where} already exists")
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return ResourceExhausted("the volume is full")
    if error.errno == errno.ENAMETOOLONG:
        return InvalidArgument(f"path {where} is too long")
    if error.errno == errno.EROFS:
        return Unavailable("the volume is read-only after a filesystem error")
    return None


def _errors(parts: tuple[str, ...]) -> contextlib.AbstractContextManager[None]:
    return reraised(lambda error: domain_error(error, parts))


def check_owner(uid: int | None, gid: int | None, mode: int | None) -> None:
    for name, value in (("uid", uid), ("gid", gid)):
        if value is not None and not 0 <= value <= MAX_ID:
            raise InvalidArgument(f"{name} must be 0..{MAX_ID} (an id inside the sandboxes)")
    if mode is not None and not 0 <= mode <= 0o7777:
        raise InvalidArgument("mode must be permission bits, 0..0o7777")


class VolumeFiles:
    """The files of one mounted volume (blocking calls: run them in a thread)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _open_root(self) -> int:
        fd = os.open(self.root, _DIR_FLAGS)
        try:
            if os.fstat(fd).st_dev == self.root.parent.stat().st_dev:
                raise Unavailable("the volume is not mounted; retry shortly")
        except BaseException:
            os.close(fd)
            raise
        return fd

    @contextlib.contextmanager
    def _dir(self, parts: tuple[str, ...], make: tuple[int, int] | None = None) -> Iterator[int]:
        """An fd of the directory `parts` names, walked without following anything;
        `make=(uid, gid)` creates missing directories on the way with that owner."""
        fd = self._open_root()
        try:
            for index, name in enumerate(parts):
                with _errors(parts[: index + 1]):
                    try:
                        child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                    except NotADirectoryError as error:
                        # O_DIRECTORY beats O_NOFOLLOW: a symlink reads as "not a directory"
                        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                        if stat.S_ISLNK(st.st_mode):
                            raise OSError(errno.ELOOP, "a symlink") from error
                        raise
                    except FileNotFoundError:
                        if make is None:
                            raise
                        with contextlib.suppress(FileExistsError):
                            os.mkdir(name, DIR_MODE, dir_fd=fd)
                        child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                        _own(child, *make, DIR_MODE)
                os.close(fd)
                fd = child
            yield fd
        finally:
            os.close(fd)

    def stat(self, parts: tuple[str, ...]) -> Entry:
        if not parts:
            with self._dir(()) as fd:
                return _entry(parts, os.fstat(fd))
        with self._dir(parts[:-1]) as parent, _errors(parts):
            return _stat_at(parent, parts)

    def list_dir(self, parts: tuple[str, ...], depth: int) -> list[Entry]:
        if depth < 1:
            raise InvalidArgument("depth must be at least 1")
        listed: list[Entry] = []
        with self._dir(parts) as fd:
            _list_into(fd, parts, min(depth, MAX_DEPTH), listed)
        return listed

    def make_dir(self, parts: tuple[str, ...], uid: int, gid: int, mode: int, force: bool) -> Entry:
        if not parts:
            raise Conflict("the volume root already exists")
        make = (uid, gid) if force else None
        with self._dir(parts[:-1], make) as parent, _errors(parts):
            name = parts[-1]
            try:
                os.mkdir(name, DIR_MODE, dir_fd=parent)
            except FileExistsError:
                if not force:
                    raise
                return _stat_at(parent, parts)  # mkdir -p: an existing directory is fine
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
            try:
                _own(fd, uid, gid, mode)
                return _entry(parts, os.fstat(fd))
            finally:
                os.close(fd)

    def remove(self, parts: tuple[str, ...]) -> None:
        if not parts:
            raise InvalidArgument("the volume root cannot be removed; delete the volume")
        with self._dir(parts[:-1]) as parent, _errors(parts):
            name = parts[-1]
            if stat.S_ISDIR(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
                # fd-based: never follows a symlink planted inside the tree meanwhile
                shutil.rmtree(name, dir_fd=parent)
            else:
                os.unlink(name, dir_fd=parent)

    def set_metadata(
        self, parts: tuple[str, ...], uid: int | None, gid: int | None, mode: int | None
    ) -> Entry:
        if uid is None and gid is None and mode is None:
            raise InvalidArgument("give at least one of uid, gid and mode")
        with self._dir(parts[:-1] if parts else ()) as parent, _errors(parts):
            if not parts:
                _own(parent, uid, gid, mode)
                return _entry(parts, os.fstat(parent))
            name = parts[-1]
            if stat.S_ISLNK(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
                if mode is not None:
                    raise InvalidArgument(f"path {shown(parts)} is a symlink: it has no mode")
                os.chown(name, _id(uid), _id(gid), dir_fd=parent, follow_symlinks=False)
                return _stat_at(parent, parts)
            # O_PATH opens anything (a socket too) without reading it; the magic link of
            # /proc/self/fd then names that very inode for chown and chmod.
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
            try:
                _own(fd, uid, gid, mode)
                return _entry(parts, os.fstat(fd))
            finally:
                os.close(fd)

    def open_read(self, parts: tuple[str, ...]) -> tuple[int, int]:
        """(fd, size) of the regular file `parts` names; the caller closes the fd."""
        if not parts:
            raise InvalidArgument("path / is a directory")
        with self._dir(parts[:-1]) as parent, _errors(parts):
            name = parts[-1]
            before = os.stat(name, dir_fd=parent, follow_symlinks=False)
            _require_file(before, parts)
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
            fd = os.open(name, flags, dir_fd=parent)
            after = os.fstat(fd)
            if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
                os.close(fd)
                raise Conflict(f"path {shown(parts)} changed while it was opened; retry")
            return fd, after.st_size

    def begin_write(
        self, parts: tuple[str, ...], uid: int, gid: int, mode: int, force: bool
    ) -> Upload:
        """A new file's content, to be written and then put at `parts` (`Upload.finish`);
        `force` creates missing parent directories."""
        if not parts:
            raise InvalidArgument("path / is a directory")
        with self._dir(parts[:-1], (uid, gid) if force else None) as parent, _errors(parts):
            name = parts[-1]
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISDIR(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
                    raise InvalidArgument(f"path {shown(parts)} is a directory")
            kept = os.dup(parent)
            try:
                fd = os.open(".", os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o600, dir_fd=kept)
            except BaseException:
                os.close(kept)
                raise
            return Upload(kept, fd, parts, (uid, gid, mode))


class Upload:
    """An unnamed file in its target's directory; `finish` names it, `abort` drops it."""

    def __init__(
        self, parent: int, fd: int, parts: tuple[str, ...], owner: tuple[int, int, int]
    ) -> None:
        self._parent = parent
        self._fd = fd
        self._parts = parts
        self._owner = owner

    def write(self, data: bytes) -> None:
        with _errors(self._parts):
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]

    def finish(self) -> Entry:
        name = self._parts[-1]
        temporary = f".agentcube-upload-{os.urandom(8).hex()}"
        try:
            with _errors(self._parts):
                _own(self._fd, *self._owner)
                os.link(f"/proc/self/fd/{self._fd}", temporary, dst_dir_fd=self._parent)
                try:
                    os.replace(temporary, name, src_dir_fd=self._parent,
                               dst_dir_fd=self._parent)  # fmt: skip
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(temporary, dir_fd=self._parent)
                    raise
                return _entry(self._parts, os.fstat(self._fd))
        finally:
            self.abort()

    def abort(self) -> None:
        """Close (an unnamed file then disappears); idempotent."""
        for fd in (self._fd, self._parent):
            if fd >= 0:
                os.close(fd)
        self._fd = self._parent = -1


def _id(value: int | None) -> int:
    return -1 if value is None else value  # -1: chown leaves it as it is


def _own(fd: int, uid: int | None, gid: int | None, mode: int | None) -> None:
    """Owner first, then mode: a chown clears setuid and setgid bits."""
    magic = f"/proc/self/fd/{fd}"  # works for O_PATH fds too, unlike fchown/fchmod
    if uid is not None or gid is not None:
        os.chown(magic, _id(uid), _id(gid))
    if mode is not None:
        Path(magic).chmod(mode)


def _require_file(st: os.stat_result, parts: tuple[str, ...]) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise InvalidArgument(f"path {shown(parts)} is a directory")
    if stat.S_ISLNK(st.st_mode):
        raise InvalidArgument(
            f"path {shown(parts)} is a symlink; the volume content API does not follow symlinks"
        )
    if not stat.S_ISREG(st.st_mode):
        raise InvalidArgument(f"path {shown(parts)} is not a regular file")


def _stat_at(parent: int, parts: tuple[str, ...]) -> Entry:
    name = parts[-1]
    st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    target = os.readlink(name, dir_fd=parent) if stat.S_ISLNK(st.st_mode) else None
    return _entry(parts, st, target)


def _list_into(fd: int, parts: tuple[str, ...], depth: int, listed: list[Entry]) -> None:
    """Entries below the directory `fd` (named `parts`), `depth` levels, names sorted."""
    with os.scandir(fd) as scanned:
        names = sorted(entry.name for entry in scanned)
    for name in names:
        child = (*parts, name)
        try:
            entry = _stat_at(fd, child)
        except FileNotFoundError:
            continue  # removed meanwhile
        if len(listed) >= MAX_LISTED:
            raise InvalidArgument(
                f"more than {MAX_LISTED} entries; list a subdirectory or a smaller depth"
            )
        listed.append(entry)
        if depth > 1 and entry.type == "directory":
            try:
                below = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError:
                continue  # replaced by a symlink or removed meanwhile: not followed
            try:
                _list_into(below, child, depth - 1, listed)
            finally:
                os.close(below)
