"""Filesystem entries as envd describes them: `EntryInfo`, Go-style modes, metadata xattrs.

envd is written in Go, so what the SDK sees is Go's view of a file: `permissions` is
`os.FileMode.String()` ("-rw-r--r--", "drwxr-xr-x", "Lrwxrwxrwx" for a symlink: Go's
letter for ModeSymlink is `L`), and `mode` is `FileMode.Perm()`, the nine permission
bits (E2B's own SDK tests expect 0o755 for a directory, not Go's ModeDir bit). A symlink is
reported as envd >= 0.6 does: `is_symlink` set, `type` and `mode` describe the target,
`symlink_target` is the resolved target path.

Names that are not valid UTF-8 cannot travel in a protobuf `string`; connect-go's envd fails
the whole call on them. picod skips such entries in listings and watch events instead, so
one odd file name does not hide a whole directory.

Everything here blocks on the filesystem; the services call it through `asyncio.to_thread`.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import stat
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from protobuf.wkt import Timestamp

from extproc._gen.filesystem.filesystem_pb import EntryInfo, FileType
from extproc.core.errors import (
    AlreadyExists,
    DomainError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from extproc.core.os_errors import reraised

# User metadata lives in extended attributes under this prefix (envd's convention).
XATTR_PREFIX = "user.e2b."

# Go's os.FileMode type bits, in the order FileMode.String() prints them ("dalTLDpSugct?").
_GO_DIR = 1 << 31
_GO_SYMLINK = 1 << 27
_GO_DEVICE = 1 << 26
_GO_NAMED_PIPE = 1 << 25
_GO_SOCKET = 1 << 24
_GO_SETUID = 1 << 23
_GO_SETGID = 1 << 22
_GO_CHAR_DEVICE = 1 << 21
_GO_STICKY = 1 << 20
_GO_LETTERS = "dalTLDpSugct?"

# Successful uid/gid -> name lookups only: an account added later must still be found.
_owner_names: dict[int, str] = {}
_group_names: dict[int, str] = {}


def is_utf8(name: str) -> bool:
    """False for names os.fsdecode() had to surrogate-escape."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def go_file_mode(st_mode: int) -> int:
    """The os.FileMode Go's os.Lstat would report for this POSIX st_mode."""
    mode = st_mode & 0o777
    kind = stat.S_IFMT(st_mode)
    if kind == stat.S_IFDIR:
        mode |= _GO_DIR
    elif kind == stat.S_IFLNK:
        mode |= _GO_SYMLINK
    elif kind == stat.S_IFBLK:
        mode |= _GO_DEVICE
    elif kind == stat.S_IFCHR:
        mode |= _GO_DEVICE | _GO_CHAR_DEVICE
    elif kind == stat.S_IFIFO:
        mode |= _GO_NAMED_PIPE
    elif kind == stat.S_IFSOCK:
        mode |= _GO_SOCKET
    if st_mode & stat.S_ISUID:
        mode |= _GO_SETUID
    if st_mode & stat.S_ISGID:
        mode |= _GO_SETGID
    if st_mode & stat.S_ISVTX:
        mode |= _GO_STICKY
    return mode


def go_mode_string(go_mode: int) -> str:
    """Go's FileMode.String(): type letters (or "-"), then rwxrwxrwx."""
    letters = "".join(c for i, c in enumerate(_GO_LETTERS) if go_mode & (1 << (31 - i)))
    perms = "".join(c if go_mode & (1 << (8 - i)) else "-" for i, c in enumerate("rwxrwxrwx"))
    return (letters or "-") + perms


def _owner(uid: int) -> str:
    return _cached_name(_owner_names, uid, lambda: pwd.getpwuid(uid).pw_name)


def _group(gid: int) -> str:
    return _cached_name(_group_names, gid, lambda: grp.getgrgid(gid).gr_name)


def _cached_name(names: dict[int, str], number: int, lookup: Callable[[], str]) -> str:
    """The account name of a uid/gid, or the number itself when no account has it."""
    if number not in names:
        try:
            names[number] = lookup()
        except KeyError:
            return str(number)
    return names[number]


def _file_type(st_mode: int) -> FileType:
    if stat.S_ISDIR(st_mode):
        return FileType.DIRECTORY
    # envd reports every non-directory (sockets, fifos, devices too) as a file.
    return FileType.FILE


def read_metadata(path: Path) -> dict[str, str]:
    """`user.e2b.*` xattrs, keys without the prefix; {} where xattrs are unsupported."""
    try:
        names = os.listxattr(path)
    except OSError:
        return {}
    metadata: dict[str, str] = {}
    for name in names:
        if not name.startswith(XATTR_PREFIX):
            continue
        try:
            value = os.getxattr(path, name)
        except OSError:
            continue
        metadata[name[len(XATTR_PREFIX) :]] = value.decode("utf-8", errors="replace")
    return metadata


def entry_info(path: Path) -> EntryInfo:
    """EntryInfo of `path` itself (a symlink is not followed, but described by its target)."""
    st = os.lstat(path)
    go_mode = go_file_mode(st.st_mode)
    info = EntryInfo(
        name=path.name,
        path=str(path),
        size=st.st_size,
        permissions=go_mode_string(go_mode),
        owner=_owner(st.st_uid),
        group=_group(st.st_gid),
        modified_time=Timestamp.from_nanos(st.st_mtime_ns),
    )
    if stat.S_ISLNK(st.st_mode):
        info.is_symlink = True
        target = path.parent / path.readlink()
        try:
            resolved = os.path.realpath(target, strict=True)
            target_st = Path(resolved).stat()
        except OSError:
            # Dangling: keep the SYMLINK type so SDK listings still show the link.
            info.type = FileType.SYMLINK
            info.mode = st.st_mode & 0o777
            info.symlink_target = (
                os.path.normpath(target)
                .encode("utf-8", "surrogateescape")
                .decode("utf-8", "replace")
            )
            return info
        info.type = _file_type(target_st.st_mode)
        info.mode = target_st.st_mode & 0o777
        info.symlink_target = resolved.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    else:
        info.type = _file_type(st.st_mode)
        info.mode = st.st_mode & 0o777
    info.metadata = read_metadata(path)
    return info


def list_entries(root: Path, depth: int) -> list[EntryInfo]:
    """Entries under directory `root`, down to `depth` levels, pre-order, sorted by name.

    Subdirectories are descended without following symlinks (as Go's WalkDir); entries that
    vanish or cannot be read while walking are skipped, as they would be a moment later.
    """
    out: list[EntryInfo] = []
    _walk(root, depth, out)
    return out


def _walk(directory: Path, depth: int, out: list[EntryInfo]) -> None:
    try:
        with os.scandir(directory) as it:
            names = sorted(e.name for e in it)
    except OSError:
        return
    for name in names:
        if not is_utf8(name):
            continue
        child = directory / name
        try:
            out.append(entry_info(child))
            is_dir = depth > 1 and stat.S_ISDIR(os.lstat(child).st_mode)
        except OSError:
            continue
        if is_dir:
            _walk(child, depth - 1, out)


def make_dirs(path: Path, owner: tuple[int, int] | None) -> None:
    """mkdir -p, giving each directory it creates to `owner` (uid, gid) when set.

    envd chowns what it creates to the requesting user; done one level at a time so that
    pre-existing parents keep their owner.
    """
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir()
        except FileExistsError:
            if not directory.is_dir():
                raise
            continue
        if owner is not None:
            os.chown(directory, *owner)


def domain_error(err: OSError, path: Path | str) -> DomainError | None:
    """The domain error an OSError on `path` means for the caller; None: not a known one."""
    where = str(path)
    code = err.errno
    if code == errno.ENOENT:
        return NotFound(f"path not found: {where}")
    if code == errno.EEXIST:
        return AlreadyExists(f"path already exists: {where}")
    if code in (
        errno.ENOTDIR,
        errno.EISDIR,
        errno.ENOTEMPTY,
        errno.ENAMETOOLONG,
        errno.ELOOP,
        errno.EXDEV,
    ):
        return InvalidArgument(f"{err.strerror}: {where}")
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return PermissionDenied(f"permission denied: {where}")
    if code in (errno.ENOSPC, errno.EDQUOT):
        return ResourceExhausted(f"not enough disk space: {where}")
    return None


def os_errors(path: Path | str) -> AbstractContextManager[None]:
    """Re-raise OSErrors on `path` as domain errors (unknown ones escape unchanged)."""
    return reraised(lambda error: domain_error(error, path))


# Uploads that replace a file write a hidden sibling first and rename it over the target,
# so a failed upload never destroys the old content. Watchers hide these names and report
# the final rename as a write of the target (what envd, which writes in place, reports).
_UPLOAD_TEMP_SUFFIX = ".picod-upload"


def upload_temp_path(target: Path, token: str) -> Path:
    # Truncated so that a 255-byte target name still leaves room for the suffix.
    stem = target.name.encode("utf-8", "surrogateescape")[:180].decode("utf-8", "ignore")
    return target.parent / f".{stem}.{token}{_UPLOAD_TEMP_SUFFIX}"


def is_upload_temp(name: str) -> bool:
    return name.startswith(".") and name.endswith(_UPLOAD_TEMP_SUFFIX)
