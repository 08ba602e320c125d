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
import errno
import os
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from extproc.core import namespaces
from extproc.core.errors import Conflict, Unavailable

# volume_mounting's own system calls share namespaces' libc handle and errno check.
from extproc.lifecycle import writable_layer

# ids 0..65535 of each sandbox map to host ids (8 + index) * 65536 onwards: the block
# systemd leaves to containers (524288..1879048191) fits 28 663 sandboxes.
ID_BLOCK = 65536
_FIRST_BLOCK = 8
MAX_INDEX = 1879048191 // ID_BLOCK - _FIRST_BLOCK - 1


def uid_base(index: int) -> int:
    if not 1 <= index <= MAX_INDEX:
        raise ValueError(f"sandbox index {index} has no id block")
    return (_FIRST_BLOCK + index) * ID_BLOCK


def new_user_namespace(base: int) -> int:
    """An fd of a new user namespace mapping 0..65535 to base..base+65535 (caller closes).

    The namespace needs a process to be made in; `unshare -U sleep` is that process, and
    the open fd keeps the namespace alive after it is killed. It gets none of our output
    fds: were we killed before killing it, it would hold `up`'s pipe for its whole sleep.
    """
    with subprocess.Popen(
        ["unshare", "--user", "sleep", "60"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    ) as holder:
        try:
            ours = Path("/proc/self/ns/user").readlink()
            deadline = time.monotonic() + 5
            while Path(f"/proc/{holder.pid}/ns/user").readlink() == ours:
                if holder.poll() is not None or time.monotonic() > deadline:
                    said = _stderr_of_ended(holder) or "no user namespace within 5 s"
                    raise Unavailable(f"could not create a user namespace (unshare --user: {said})")
                time.sleep(0.0002)
            for name in ("uid_map", "gid_map"):
                Path(f"/proc/{holder.pid}/{name}").write_text(f"0 {base} {ID_BLOCK}\n")
            return os.open(f"/proc/{holder.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        finally:
            holder.kill()  # leaving `with` closes its pipe and reaps it


def _stderr_of_ended(holder: subprocess.Popen[bytes]) -> str:
    """What an ended `unshare` said; nothing while it still runs (its pipe would block)."""
    if holder.poll() is None or holder.stderr is None:
        return ""
    return holder.stderr.read().decode(errors="replace").strip()[-500:]


def open_idmapped_tree(source: Path, userns_fd: int, attributes: int) -> int:
    """A detached copy of the mount at `source`, its ids seen through `userns_fd`'s mapping
    and `attributes` (MOUNT_ATTR_*) set; an fd for move_mount, which the caller closes."""
    tree = namespaces.clone_mount(str(source), recursive=True)
    try:
        namespaces.set_mount_attributes(
            tree, namespaces.MOUNT_ATTR_IDMAP | attributes, userns_fd, recursive=False
        )
    except BaseException:
        os.close(tree)
        raise
    return tree


def idmapped_bind(source: Path, target: Path, userns_fd: int) -> None:
    """Bind `source` read-only at `target`, its ids seen through `userns_fd`'s mapping."""
    attributes = namespaces.MOUNT_ATTR_RDONLY | namespaces.MOUNT_ATTR_NODEV
    tree = open_idmapped_tree(source, userns_fd, attributes)
    try:
        namespaces.attach(tree, str(target))
    finally:
        os.close(tree)


def _unmount(target: Path) -> None:
    try:
        namespaces.unmount(str(target))
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.ENOENT):  # not a mount point; gone
            raise


class _Below:
    """The path `name` below a sandbox root's `dir`."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __get__(self, paths: SandboxRoot, owner: type) -> Path:
        return paths.dir / self._name


@dataclass(frozen=True)
class SandboxRoot:
    """Where one sandbox's filesystem lives on the host (all under `dir`)."""

    dir: Path
    uid_base: int

    image = _Below("layer.img")
    layer = _Below("layer")
    lower = _Below("lower")
    # Where the template's or snapshot's layers are bound, `layers/0` the top one.
    layers = _Below("layers")
    root = _Below("root")
    log = _Below("picod.log")


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
    namespaces.mount("overlay", str(paths.root), "overlay", namespaces.MS_NODEV, options)
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
