"""The Linux namespace and mount calls Python's `os` module lacks, through libc.

Shared by the lifecycle service (which hands a sandbox's root filesystem over as a detached
mount) and the sandbox zygote (which builds each sandbox's mount namespace from it). The
new mount API's numbers (`open_tree`, `move_mount`, `mount_setattr`) are the same on every
architecture; `pivot_root`'s is not, hence the table. Standard library only.
"""

from __future__ import annotations

import ctypes
import os
import platform
from pathlib import Path

CLONE_FS = 0x00000200
CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MNT_DETACH = 0x2

OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
AT_RECURSIVE = 0x8000
AT_EMPTY_PATH = 0x1000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOVE_MOUNT_T_EMPTY_PATH = 0x40
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_IDMAP = 0x100000

PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
PR_SET_MM = 35
PR_SET_MM_MAP = 14

_AT_FDCWD = -100
_SYS_OPEN_TREE, _SYS_MOVE_MOUNT, _SYS_MOUNT_SETATTR = 428, 429, 442
_SYS_PIDFD_SEND_SIGNAL, _SYS_PIDFD_OPEN = 424, 434
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}

_libc = ctypes.CDLL(None, use_errno=True)
_sbrk = _libc.sbrk
_sbrk.restype = ctypes.c_void_p
_sbrk.argtypes = [ctypes.c_ssize_t]


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), f"unshare({flags:#x})")


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(fd, nstype), f"setns({nstype:#x})")


def mount(source: str, target: str, fstype: str, flags: int, data: str = "") -> None:
    _check(
        _libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None,
                    flags, data.encode() if data else None),
        f"mount {fstype or source} at {target}",
    )  # fmt: skip


def make_private(target: str) -> None:
    """Stop mount events under `target` from propagating either way."""
    _check(_libc.mount(None, target.encode(), None, MS_REC | MS_PRIVATE, None),
           f"make {target} private")  # fmt: skip


def unmount(target: str, flags: int = MNT_DETACH) -> None:
    _check(_libc.umount2(target.encode(), flags), f"umount {target}")


def open_tree(path: str, flags: int, dirfd: int = _AT_FDCWD) -> int:
    """An fd of a detached copy of the mount at `path` (with OPEN_TREE_CLONE)."""
    return _check(_libc.syscall(_SYS_OPEN_TREE, dirfd, path.encode(), flags), f"open_tree({path})")


def clone_mount(path: str, recursive: bool = False) -> int:
    """A detached copy (close-on-exec fd) of the mount at `path`, and of the mounts below
    it when `recursive`."""
    flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (AT_RECURSIVE if recursive else 0)
    return open_tree(path, flags)


def set_mount_attributes(
    tree: int, attributes: int, userns_fd: int = 0, recursive: bool = True
) -> None:
    """Set MOUNT_ATTR_* flags on the detached tree `tree`: on every mount of it, or only on
    its top one unless `recursive`. MOUNT_ATTR_IDMAP takes its mapping from `userns_fd`."""
    attr = _MountAttr(attributes, 0, 0, userns_fd)
    flags = AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0)
    _check(
        _libc.syscall(_SYS_MOUNT_SETATTR, tree, b"", flags, ctypes.byref(attr),
                      ctypes.sizeof(attr)),
        f"mount_setattr({attributes:#x})",
    )  # fmt: skip


def attach(tree: int, target: str) -> None:
    """Mount the detached tree `tree` at `target`."""
    _check(
        _libc.syscall(_SYS_MOVE_MOUNT, tree, b"", _AT_FDCWD, target.encode(),
                      MOVE_MOUNT_F_EMPTY_PATH),
        f"move_mount to {target}",
    )  # fmt: skip


def attach_at(tree: int, target_fd: int, what: str) -> None:
    """Mount the detached tree `tree` on the directory open as `target_fd` (an O_PATH fd
    held from a walk that followed no symlink, so nothing can swap the path meanwhile)."""
    _check(
        _libc.syscall(_SYS_MOVE_MOUNT, tree, b"", target_fd, b"",
                      MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH),
        f"move_mount({what})",
    )  # fmt: skip


def pidfd_open(pid: int) -> int | None:
    """A pidfd of `pid`, or None when it is gone. While it is open, `pid` names that very
    process."""
    pidfd = _libc.syscall(_SYS_PIDFD_OPEN, pid, 0)
    return int(pidfd) if pidfd >= 0 else None


def pidfd_alive(pidfd: int) -> bool:
    """The process of `pidfd` has not exited (signal 0 through the pidfd)."""
    return bool(_libc.syscall(_SYS_PIDFD_SEND_SIGNAL, pidfd, 0, None, 0) == 0)


def pivot_root(new_root: str, put_old: str) -> None:
    number = _SYS_PIVOT_ROOT.get(platform.machine())
    if number is None:
        raise OSError(f"pivot_root: unknown system call number on {platform.machine()}")
    _check(_libc.syscall(number, new_root.encode(), put_old.encode()), "pivot_root")


def _prctl(option: int, argument: int | bytes, what: str) -> None:
    value = ctypes.c_char_p(argument) if isinstance(argument, bytes) else ctypes.c_ulong(argument)
    zero = ctypes.c_ulong(0)
    _check(_libc.prctl(ctypes.c_int(option), value, zero, zero, zero), f"prctl({what})")


def set_parent_death_signal(signum: int) -> None:
    _prctl(PR_SET_PDEATHSIG, signum, "PR_SET_PDEATHSIG")


def set_thread_name(name: str) -> None:
    """The name `ps -o comm` and `top` show (15 bytes at most)."""
    _prctl(PR_SET_NAME, name.encode()[:15], "PR_SET_NAME")


class _MmMap(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "start_code", "end_code", "start_data", "end_data", "start_brk", "brk",
        "start_stack", "arg_start", "arg_end", "env_start", "env_end", "auxv",
    )] + [("auxv_size", ctypes.c_uint32), ("exe_fd", ctypes.c_uint32)]  # fmt: skip


# Command lines set by `set_command_line` live here for the life of the process.
_command_lines: list[ctypes.Array[ctypes.c_char]] = []


def set_command_line(argv: list[str]) -> None:
    """Make /proc/self/cmdline (what `ps -o args` shows) read `argv`, with PR_SET_MM_MAP
    (the checkpoint/restore interface, which needs no privilege for one's own process):
    the memory map stays as it is but for where the arguments are."""
    text = b"".join(arg.encode() + b"\0" for arg in argv)
    buffer = ctypes.create_string_buffer(text, len(text))
    _command_lines.append(buffer)
    raw = Path("/proc/self/stat").read_text(encoding="ascii", errors="replace")
    fields = [int(f) if f.lstrip("-").isdigit() else 0 for f in raw[raw.rindex(")") + 2 :].split()]
    # stat(5) numbers fields from 1 with pid and comm first: field n is fields[n - 3].
    mm = _MmMap(
        start_code=fields[26 - 3], end_code=fields[27 - 3], start_data=fields[45 - 3],
        end_data=fields[46 - 3], start_brk=fields[47 - 3], brk=_sbrk(0) or 0,
        start_stack=fields[28 - 3], arg_start=ctypes.addressof(buffer),
        arg_end=ctypes.addressof(buffer) + len(text), env_start=fields[50 - 3],
        env_end=fields[51 - 3], auxv=0, auxv_size=0, exe_fd=0xFFFFFFFF,
    )  # fmt: skip
    _check(
        _libc.prctl(ctypes.c_int(PR_SET_MM), ctypes.c_ulong(PR_SET_MM_MAP), ctypes.byref(mm),
                    ctypes.c_ulong(ctypes.sizeof(mm)), ctypes.c_ulong(0)),
        "prctl(PR_SET_MM_MAP)",
    )  # fmt: skip
