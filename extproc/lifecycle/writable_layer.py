"""A sandbox's writable layer: a sparse ext4 image, made by copying a template and mounted
through a loop device, in-process.

Why a template. `mkfs.ext4` per sandbox costs an exec and ~6 ms of CPU, and the mount
another exec (`mount -o loop`): together a tenth of what a sandbox start may cost at 30
starts a second on two cores. Every layer of one size is the same empty filesystem, so it
is formatted once per size (`<state>/layer-templates/ext4-<MiB>.img`) and each sandbox gets
a copy of its few allocated blocks (~170 KiB; reflinked where the filesystem can, else
`copy_file_range` over its data extents, the holes left as holes). Without the
resize inode (a layer is never resized online), the copy is a few dozen blocks.

The filesystem's root belongs to the sandbox's root id (chowned after the mount), as
`mkfs -E root_owner` made it before. The copies share the template's UUID, which ext4 does
not mind.

Mounting: a free loop device from /dev/loop-control, bound to the image with LOOP_CONFIGURE
(auto-clear: the device detaches when the filesystem is unmounted), then mount(2). Kernels
without LOOP_CONFIGURE (before 5.8) get `mount -o loop` instead.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import subprocess
import threading
from pathlib import Path

from extproc.core import namespaces
from extproc.core.errors import Unavailable

_LOOP_CTL_GET_FREE = 0x4C82
_LOOP_CONFIGURE = 0x4C0A
_LO_FLAGS_AUTOCLEAR = 4
_FICLONE = 0x40049409
_MKFS = ("mkfs.ext4", "-q", "-F", "-O", "^has_journal,^resize_inode", "-m", "0",
         "-E", "lazy_itable_init=1,nodiscard")  # fmt: skip
_made = threading.Lock()


class _LoopInfo64(ctypes.Structure):
    _fields_ = [
        ("lo_device", ctypes.c_uint64), ("lo_inode", ctypes.c_uint64),
        ("lo_rdevice", ctypes.c_uint64), ("lo_offset", ctypes.c_uint64),
        ("lo_sizelimit", ctypes.c_uint64), ("lo_number", ctypes.c_uint32),
        ("lo_encrypt_type", ctypes.c_uint32), ("lo_encrypt_key_size", ctypes.c_uint32),
        ("lo_flags", ctypes.c_uint32), ("lo_file_name", ctypes.c_uint8 * 64),
        ("lo_crypt_name", ctypes.c_uint8 * 64), ("lo_encrypt_key", ctypes.c_uint8 * 32),
        ("lo_init", ctypes.c_uint64 * 2),
    ]  # fmt: skip


class _LoopConfig(ctypes.Structure):
    _fields_ = [
        ("fd", ctypes.c_uint32), ("block_size", ctypes.c_uint32), ("info", _LoopInfo64),
        ("reserved", ctypes.c_uint64 * 8),
    ]  # fmt: skip


def template_dir(sandboxes_dir: Path) -> Path:
    """Where the templates of the layers of sandboxes under `sandboxes_dir` are kept."""
    return sandboxes_dir.parent / "layer-templates"


def _template(directory: Path, size_mb: int) -> Path:
    """The empty filesystem every layer of `size_mb` MiB starts as (made on first use)."""
    path = directory / f"ext4-{size_mb}.img"
    if path.exists():
        return path
    with _made:
        if path.exists():
            return path
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        scratch = path.with_suffix(".tmp")
        with scratch.open("wb") as image:
            image.truncate(size_mb * 1024 * 1024)  # sparse: only what mkfs writes takes disk
        made = subprocess.run([*_MKFS, str(scratch)], capture_output=True, check=False)
        if made.returncode != 0:
            scratch.unlink(missing_ok=True)
            raise Unavailable(f"writable layer: mkfs.ext4: {made.stderr.decode().strip()}")
        scratch.rename(path)
    return path


def _copy_sparse(source: int, target: int) -> None:
    """Copy `source`'s data extents into `target` (same size), holes left as holes."""
    offset = 0
    while True:
        try:
            start = os.lseek(source, offset, os.SEEK_DATA)
        except OSError as error:
            if error.errno == errno.ENXIO:  # no data after `offset`
                return
            raise
        end = os.lseek(source, start, os.SEEK_HOLE)
        position = start
        while position < end:
            copied = os.copy_file_range(source, target, end - position, position, position)
            if copied == 0:
                raise OSError(errno.EIO, "copy_file_range copied nothing")
            position += copied
        offset = end


def make_image(image: Path, size_mb: int, templates: Path) -> None:
    """A new empty layer image at `image` (blocking: a thread)."""
    template = _template(templates, size_mb)
    source = os.open(template, os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(image, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.ioctl(target, _FICLONE, source)  # a reflink, where the filesystem can
            except OSError:
                os.ftruncate(target, os.fstat(source).st_size)
                _copy_sparse(source, target)
        finally:
            os.close(target)
    except OSError as error:
        raise Unavailable(f"writable layer: copying the empty layer: {error}") from error
    finally:
        os.close(source)


def _attach_loop(image: Path) -> tuple[str, int]:
    """A loop device bound to `image`, and an open fd of it: auto-clear detaches the device
    at its last close, so the caller keeps the fd until the filesystem is mounted."""
    backing = os.open(image, os.O_RDWR | os.O_CLOEXEC)
    try:
        control = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
        try:
            for _ in range(16):  # another process may take the free device first
                number = fcntl.ioctl(control, _LOOP_CTL_GET_FREE)
                device = f"/dev/loop{number}"
                loop = os.open(device, os.O_RDWR | os.O_CLOEXEC)
                config = _LoopConfig(fd=backing)
                config.info.lo_flags = _LO_FLAGS_AUTOCLEAR
                try:
                    fcntl.ioctl(loop, _LOOP_CONFIGURE, bytes(config))
                except OSError as error:
                    os.close(loop)
                    if error.errno != errno.EBUSY:
                        raise
                    continue
                return device, loop
        finally:
            os.close(control)
    finally:
        os.close(backing)
    raise OSError(errno.EBUSY, "no free loop device")


def mount_image(image: Path, target: Path, owner: int) -> None:
    """Mount the layer `image` at `target` (nodev), its root owned by `owner`."""
    try:
        device, loop = _attach_loop(image)
    except OSError as error:
        if error.errno not in (errno.ENOTTY, errno.EINVAL):
            raise Unavailable(f"writable layer: loop device: {error}") from error
        _mount_with_command(image, target)
    else:
        try:
            namespaces.mount(device, str(target), "ext4", namespaces.MS_NODEV)
        except OSError as error:
            raise Unavailable(f"writable layer: mount: {error}") from error
        finally:
            os.close(loop)  # the mount holds the device now; unmounting frees it
    os.chown(target, owner, owner)


def _mount_with_command(image: Path, target: Path) -> None:
    mounted = subprocess.run(
        ["mount", "-o", "loop,nodev", str(image), str(target)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        raise Unavailable(f"writable layer: mount: {mounted.stderr.decode().strip()}")
