"""A sandbox's own users and root filesystem: a user namespace and an id-mapped overlay.

Users. Each sandbox gets a user namespace mapping its ids 0..65535 onto a block of host ids
of its own (`uid_base`, from the sandbox's address index), so root and `user` (1000) inside
are unprivileged and distinct host ids outside, whatever accounts the host has.

Root filesystem. The base image (`rootfs`) is owned by host root like any Debian tree. An
id-mapped, read-only bind of it (`mount_setattr(MOUNT_ATTR_IDMAP)`, done here by host root)
shows it to the sandbox's user namespace with ownership intact: `/usr/bin/sudo` is setuid
root *inside*. That bind is the lower layer of an overlay whose upper layer lives on a
sparse ext4 image of the sandbox's own, so root inside can install packages, the layer's
size is bounded, and nothing written reaches the base, the host or another sandbox.

Layers. A sandbox of a built template or a snapshot has more lower layers above the base
(`layers`: frozen writable layers, stored with in-sandbox ids), each bound id-mapped the same
way under `layers/N`, top first in `lowerdir`. Those layers are a stranger's files, and the
host writes into the merged root as host root before the sandbox starts (identity files, the
JWT key, the init's log and mount points): `check_root` refuses a root in which any of those
paths is, or passes through, a symlink, so no such write can leave the root. Overlay
redirects and metacopy stay off, so an upper directory is self-contained once frozen.

The mounts are made in the host's mount namespace and survive a lifecycle restart, as the
sandbox does; `unmount_root` removes them when the sandbox ends. Bwrap is not used: it
always sets no_new_privs, which makes `sudo` fail; the namespace chain in `spawning` does
what it did without that flag.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from extproc.core.errors import Conflict, Unavailable
from extproc.lifecycle import writable_layer

# ids 0..65535 of each sandbox map to host ids (8 + index) * 65536 onwards: the block
# systemd leaves to containers (524288..1879048191) fits 28 663 sandboxes.
ID_BLOCK = 65536
_FIRST_BLOCK = 8
MAX_INDEX = 1879048191 // ID_BLOCK - _FIRST_BLOCK - 1

_AT_FDCWD = -100
_AT_EMPTY_PATH = 0x1000
_AT_RECURSIVE = 0x8000
_OPEN_TREE_CLONE = 1
_OPEN_TREE_CLOEXEC = 0o2000000
_MOUNT_ATTR_RDONLY = 0x1
_MOUNT_ATTR_NODEV = 0x4
_MOUNT_ATTR_IDMAP = 0x100000
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_MS_NODEV = 0x4
_MNT_DETACH = 0x2
_SYS_OPEN_TREE, _SYS_MOVE_MOUNT, _SYS_MOUNT_SETATTR = 428, 429, 442

_libc = ctypes.CDLL(None, use_errno=True)


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


def uid_base(index: int) -> int:
    if not 1 <= index <= MAX_INDEX:
        raise ValueError(f"sandbox index {index} has no id block")
    return (_FIRST_BLOCK + index) * ID_BLOCK


def new_user_namespace(base: int) -> int:
    """An fd of a new user namespace mapping 0..65535 to base..base+65535 (caller closes).

    The namespace needs a process to be made in; `unshare -U sleep` is that process, and
    the open fd keeps the namespace alive after it is killed.
    """
    holder = subprocess.Popen(["unshare", "--user", "sleep", "60"], stdin=subprocess.DEVNULL)
    try:
        ours = Path("/proc/self/ns/user").readlink()
        deadline = time.monotonic() + 5
        while Path(f"/proc/{holder.pid}/ns/user").readlink() == ours:
            if holder.poll() is not None or time.monotonic() > deadline:
                raise Unavailable("could not create a user namespace (unshare --user failed)")
            time.sleep(0.0002)
        for name in ("uid_map", "gid_map"):
            Path(f"/proc/{holder.pid}/{name}").write_text(f"0 {base} {ID_BLOCK}\n")
        return os.open(f"/proc/{holder.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        holder.kill()
        holder.wait()


def open_idmapped_tree(source: Path, userns_fd: int, attributes: int) -> int:
    """A detached copy of the mount at `source`, its ids seen through `userns_fd`'s mapping
    and `attributes` (MOUNT_ATTR_*) set; an fd for move_mount, which the caller closes."""
    tree = _check(
        _libc.syscall(_SYS_OPEN_TREE, _AT_FDCWD, str(source).encode(),
                      _OPEN_TREE_CLONE | _OPEN_TREE_CLOEXEC | _AT_RECURSIVE),
        f"open_tree({source})",
    )  # fmt: skip
    try:
        attr = _MountAttr(_MOUNT_ATTR_IDMAP | attributes, 0, 0, userns_fd)
        _check(
            _libc.syscall(_SYS_MOUNT_SETATTR, tree, b"", _AT_EMPTY_PATH, ctypes.byref(attr),
                          ctypes.sizeof(attr)),
            f"mount_setattr(idmap {source})",
        )  # fmt: skip
    except BaseException:
        os.close(tree)
        raise
    return tree


def idmapped_bind(source: Path, target: Path, userns_fd: int) -> None:
    """Bind `source` read-only at `target`, its ids seen through `userns_fd`'s mapping."""
    tree = open_idmapped_tree(source, userns_fd, _MOUNT_ATTR_RDONLY | _MOUNT_ATTR_NODEV)
    try:
        _check(
            _libc.syscall(_SYS_MOVE_MOUNT, tree, b"", _AT_FDCWD, str(target).encode(),
                          _MOVE_MOUNT_F_EMPTY_PATH),
            f"move_mount({target})",
        )  # fmt: skip
    finally:
        os.close(tree)


def _mount(source: str, target: Path, fstype: str, flags: int, data: str) -> None:
    _check(
        _libc.mount(source.encode(), str(target).encode(), fstype.encode(), flags,
                    data.encode()),
        f"mount {fstype} at {target}",
    )  # fmt: skip


def _unmount(target: Path) -> None:
    if _libc.umount2(str(target).encode(), _MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (22, 2):  # EINVAL: not a mount point; ENOENT: gone
            raise OSError(err, f"umount {target}: {os.strerror(err)}")


@dataclass(frozen=True)
class SandboxRoot:
    """Where one sandbox's filesystem lives on the host (all under `dir`)."""

    dir: Path
    uid_base: int

    @property
    def image(self) -> Path:
        return self.dir / "layer.img"

    @property
    def layer(self) -> Path:
        return self.dir / "layer"

    @property
    def lower(self) -> Path:
        return self.dir / "lower"

    @property
    def layers(self) -> Path:
        """Where the template's or snapshot's layers are bound, `layers/0` the top one."""
        return self.dir / "layers"

    @property
    def root(self) -> Path:
        return self.dir / "root"

    @property
    def log(self) -> Path:
        return self.dir / "picod.log"


# Mount points the sandbox's init binds the runtime onto (see `spawning`).
RUNTIME_DIRS = ("opt/agentcube/lib/extproc", "opt/agentcube/site-packages", "run")


# Paths below the root the host writes to or mounts on before the sandbox runs: each must be
# a real directory (or absent) all the way down, and the files no symlink.
HOST_TOUCHED_DIRS = (
    "etc", "var/log", "opt/agentcube/lib/extproc", "opt/agentcube/site-packages", "run",
    "proc", "dev", "tmp", "home",
)  # fmt: skip
HOST_TOUCHED_FILES = (
    "etc/hostname", "etc/hosts", "etc/resolv.conf", "var/log/agentcube-e2b.log",
    "opt/agentcube/jwt-public.pem",
)  # fmt: skip
# mount(2) takes its options in one page.
_MAX_OPTIONS = 4000


def check_root(root: Path) -> str:
    """Why the host must not prepare `root` ('' when it may; see the module docstring)."""
    for relative in (*HOST_TOUCHED_DIRS, *HOST_TOUCHED_FILES):
        parts = relative.split("/")
        path = root
        for index, part in enumerate(parts):
            path = path / part
            try:
                mode = os.lstat(path).st_mode
            except FileNotFoundError:
                break
            last = index == len(parts) - 1
            if stat.S_ISLNK(mode):
                return f"/{'/'.join(parts[: index + 1])} is a symlink"
            if not stat.S_ISDIR(mode) and not (last and relative in HOST_TOUCHED_FILES):
                return f"/{'/'.join(parts[: index + 1])} is not a directory"
    return ""


def mount_root(paths: SandboxRoot, base: Path, userns_fd: int, layer_mb: int,
               hostname: str, layers: tuple[Path, ...] = ()) -> None:  # fmt: skip
    """Build the sandbox's root at `paths.root` from `layers` (top first) over `base`
    (blocking; run it in a thread). Conflict if the layers make a root the host must not
    prepare."""
    for directory in (paths.layer, paths.lower, paths.root):
        directory.mkdir(parents=True, exist_ok=True)
    # A sparse ext4 image copied from an empty one, mounted in-process (writable_layer).
    writable_layer.make_image(paths.image, layer_mb, writable_layer.template_dir(paths.dir.parent))
    writable_layer.mount_image(paths.image, paths.layer, paths.uid_base)
    for name in ("upper", "work"):
        (paths.layer / name).mkdir(exist_ok=True)
        os.chown(paths.layer / name, paths.uid_base, paths.uid_base)
    lowers = []
    for index, layer in enumerate(layers):
        target = paths.layers / str(index)
        target.mkdir(parents=True, exist_ok=True)
        idmapped_bind(layer, target, userns_fd)
        lowers.append(str(target))
    idmapped_bind(base, paths.lower, userns_fd)
    lowers.append(str(paths.lower))
    options = (
        f"lowerdir={':'.join(lowers)},upperdir={paths.layer / 'upper'},"
        f"workdir={paths.layer / 'work'},xino=off,redirect_dir=off,metacopy=off"
    )
    if len(options) > _MAX_OPTIONS:
        raise Conflict(f"too many filesystem layers ({len(layers)}) for one sandbox")
    _mount("overlay", paths.root, "overlay", _MS_NODEV, options)
    refused = check_root(paths.root) if layers else ""
    if refused:
        raise Conflict(f"this template's files cannot be a sandbox's root: {refused}")
    _write_identity(paths, hostname)


def _write_identity(paths: SandboxRoot, hostname: str) -> None:
    """The files a sandbox expects to be its own: hostname, hosts, resolver, mount points."""
    root = paths.root
    files = {
        "etc/hostname": f"{hostname}\n",
        "etc/hosts": f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n::1\tlocalhost\n",
    }
    resolv = Path("/etc/resolv.conf")
    with contextlib.suppress(OSError):
        files["etc/resolv.conf"] = resolv.read_text()
    for name, text in files.items():
        target = root / name
        with contextlib.suppress(FileNotFoundError):
            target.unlink()  # resolv.conf may be a dangling symlink in the image
        target.write_text(text)
        os.chown(target, paths.uid_base, paths.uid_base)
    for name in RUNTIME_DIRS:
        (root / name).mkdir(parents=True, exist_ok=True)


def unmount_root(paths: SandboxRoot) -> None:
    """Undo `mount_root` (idempotent; detaches lazily: a dying sandbox may still hold it)."""
    _unmount(paths.root)
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for bound in paths.layers.iterdir():
            _unmount(bound)
    for target in (paths.lower, paths.layer):
        _unmount(target)


def layer_bytes_used(paths: SandboxRoot) -> int:
    try:
        stat = os.statvfs(paths.layer)
    except OSError:
        return 0
    return (stat.f_blocks - stat.f_bfree) * stat.f_frsize
