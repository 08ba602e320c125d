"""A volume on this machine: a sparse ext4 image of its own, mounted on the host, and bound
into the sandboxes that mount it through id-mapped mounts.

Why an image per volume, not a plain directory: its size is bounded (`--volume-mb`), so a
sandbox cannot fill the host's disk through a volume any more than through its writable
layer; and it is a filesystem of its own, so no hard link or rename crosses its edge. The
image is sparse (only what is written takes disk) and has a journal (a volume outlives
every sandbox, so it should survive a crash of the host). On the host it is mounted
`nodev,nosuid` at `<state>/volumes/<id>/mnt`, under the 0700 state directory; `mount -o
loop` reuses the loop device of an image that is still attached, so mounting it again after
a restart (while sandboxes hold it) shares the one filesystem instead of opening it twice.

Owners. The image stores the ids sandboxes see: 0 is root inside, 1000 is `user` (the root
directory belongs to `user`). Each sandbox gets its own copy of the host mount, id-mapped
through a user namespace with its own mapping (0..65535 -> its block of host ids,
`mounting.uid_base`): a file `user` wrote in one sandbox (stored as 1000) is `user`'s in
every other, whatever their blocks. Ids outside 0..65535 show as nobody.

Into a running sandbox. Warm-pool sandboxes are already running when a Create takes them,
so volumes are attached to a live mount namespace, never to the root before the start:
a thread of ours leaves our filesystem context (`unshare(CLONE_FS)`), enters the sandbox's
mount namespace through a pidfd (`setns`), walks the mount path from that namespace's root
without following a symlink (a snapshot's files could hold any), makes what is missing
(owned by root inside), and `move_mount`s the detached id-mapped copy onto it. Only that
thread ever changes namespace, and it ends with the attach. Nothing runs from the sandbox's
files: host root never executes what a tenant could have replaced. The copy is `nosuid,
nodev`; the sandbox's root cannot unmount it (its namespace belongs to the host's user
namespace).
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from extproc.core import namespaces
from extproc.core.errors import InvalidArgument, Unavailable
from extproc.lifecycle import mounting
from extproc.lifecycle.processes import children, is_alive

IMAGE = "volume.img"
MOUNT = "mnt"
USER_ID = 1000
# a volume holds data, never a setuid program or a device node that works
_VOLUME_ATTRIBUTES = namespaces.MOUNT_ATTR_NOSUID | namespaces.MOUNT_ATTR_NODEV
_PATH_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# How far below its supervisor to look for a sandbox's first process in its own mount
# namespace (spawning: its init, one level below today; a little slack for changes there).
_SEARCH_DEPTH = 4


def mount_point(directory: Path) -> Path:
    return directory / MOUNT


def _run(argv: list[str], what: str) -> None:
    done = subprocess.run(argv, capture_output=True, check=False)
    if done.returncode != 0:
        raise Unavailable(f"volume {what}: {done.stderr.decode(errors='replace').strip()}")


def create_image(directory: Path, size_mb: int) -> None:
    """Make and mount a new, empty volume in `directory` (blocking)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=False)
    image = directory / IMAGE
    with image.open("wb") as handle:
        handle.truncate(size_mb * 1024 * 1024)
    _run(
        ["mkfs.ext4", "-q", "-F", "-m", "0",
         "-E", f"root_owner={USER_ID}:{USER_ID},lazy_itable_init=1,lazy_journal_init=1",
         str(image)],
        "mkfs.ext4",
    )  # fmt: skip
    mount_image(directory)
    # An entry of root's no sandbox asked for; e2fsck makes it again if it ever needs it.
    (mount_point(directory) / "lost+found").rmdir()


def mount_image(directory: Path) -> None:
    """Mount the volume on the host unless it is (blocking; idempotent)."""
    target = mount_point(directory)
    target.mkdir(mode=0o700, exist_ok=True)
    if os.path.ismount(target):
        return
    _run(["mount", "-o", "loop,nodev,nosuid", str(directory / IMAGE), str(target)], "mount")


def unmount_image(directory: Path) -> None:
    """Unmount the host's mount (blocking; idempotent). Sandboxes' copies stay, and with them
    the filesystem, until the last one goes."""
    target = mount_point(directory)
    if not os.path.ismount(target):
        return
    try:
        namespaces.unmount(str(target), 0)
    except OSError:
        namespaces.unmount(str(target))  # busy (a transfer in flight): detach lazily


def remove(directory: Path) -> None:
    """Unmount and delete a volume's files (blocking)."""
    unmount_image(directory)
    (directory / IMAGE).unlink(missing_ok=True)
    with contextlib.suppress(FileNotFoundError):
        mount_point(directory).rmdir()
        directory.rmdir()


def _mount_namespace(pid: int) -> int | None:
    try:
        return Path(f"/proc/{pid}/ns/mnt").stat().st_ino
    except OSError:
        return None


def _user_mapping(pid: int) -> str:
    try:
        return " ".join(Path(f"/proc/{pid}/uid_map").read_text().split())
    except OSError:
        return ""


def _parent(pid: int) -> int | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    return int(raw[raw.rindex(")") + 2 :].split()[1])


def _descends_from(pid: int, supervisor: int, ticks: int) -> bool:
    """`pid` descends from `supervisor`, which is still the process started at `ticks`."""
    for _ in range(_SEARCH_DEPTH):
        parent = _parent(pid)
        if parent is None:
            return False
        if parent == supervisor:
            return is_alive(supervisor, ticks)
        pid = parent
    return False


def _sandbox_process(
    supervisor: int, ticks: int, matches: Callable[[int], bool]
) -> tuple[int, int]:
    """(pid, pidfd) of the first process below the supervisor for which `matches` holds.

    Checked again once the pidfd is held: while it is alive its pid cannot be reused, so
    the checks are of that very process, and its ancestry leads to our supervisor, not to
    whatever took a pid that died meanwhile (another sandbox's process, say)."""
    level = [supervisor]
    for _ in range(_SEARCH_DEPTH):
        level = [child for pid in level for child in children(pid)]
        for pid in level:
            if not matches(pid):
                continue
            pidfd = namespaces.pidfd_open(pid)
            if pidfd is None:
                continue
            if (
                matches(pid)
                and _descends_from(pid, supervisor, ticks)
                and namespaces.pidfd_alive(pidfd)
            ):
                return pid, pidfd
            os.close(pidfd)
    raise Unavailable("the sandbox has no running processes to attach volumes to")


def _user_namespace(supervisor: int, ticks: int, uid_base: int) -> int:
    """An fd of a user namespace mapping 0..65535 onto `uid_base`: the sandbox's own (its
    init joins it), else a new one (`mounting.new_user_namespace`, a few ms)."""
    wanted = f"0 {uid_base} {mounting.ID_BLOCK}"
    try:
        pid, pidfd = _sandbox_process(supervisor, ticks, lambda p: _user_mapping(p) == wanted)
    except Unavailable:
        return mounting.new_user_namespace(uid_base)
    try:
        fd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        if namespaces.pidfd_alive(pidfd):
            return fd
        os.close(fd)
    finally:
        os.close(pidfd)
    return mounting.new_user_namespace(uid_base)


def _mount_point_in(path: str, owner: int) -> int:
    """An O_PATH fd of `path` from the current root, made (owned by `owner`) where missing,
    no symlink followed."""
    fd = os.open("/", _PATH_FLAGS)
    try:
        names = path.strip("/").split("/")
        for index, name in enumerate(names):
            where = "/" + "/".join(names[: index + 1])
            try:
                child = os.open(name, _PATH_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o755, dir_fd=fd)
                    os.chown(name, owner, owner, dir_fd=fd, follow_symlinks=False)
                child = os.open(name, _PATH_FLAGS, dir_fd=fd)
            except OSError as error:
                if error.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise InvalidArgument(
                        f"volume mount path {path!r}: {where} is a symlink or a file in the "
                        "sandbox; mount volumes on directories"
                    ) from error
                raise
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def _attach_inside(pidfd: int, trees: Sequence[tuple[int, str]], owner: int) -> None:
    """In this (dedicated) thread: enter the sandbox's mount namespace and attach each
    detached tree at its path. The thread's namespace dies with it."""
    namespaces.unshare(namespaces.CLONE_FS)  # this thread's root and cwd its own
    namespaces.setns(pidfd, namespaces.CLONE_NEWNS)
    for tree, path in trees:
        target = _mount_point_in(path, owner)
        try:
            namespaces.attach_at(tree, target, path)
        finally:
            os.close(target)


def attach(supervisor: int, ticks: int, uid_base: int, mounts: Sequence[tuple[Path, str]]) -> None:
    """Bind each (volume directory, path inside) into the running sandbox under
    `supervisor` (started at `ticks`), id-mapped for its `uid_base` (blocking)."""
    if not mounts:
        return
    userns = _user_namespace(supervisor, ticks, uid_base)
    trees: list[tuple[int, str]] = []
    try:
        for directory, path in mounts:
            tree = mounting.open_idmapped_tree(mount_point(directory), userns, _VOLUME_ATTRIBUTES)
            trees.append((tree, path))
    except BaseException:
        for tree, _ in trees:
            os.close(tree)
        raise
    finally:
        os.close(userns)
    try:
        ours = _mount_namespace(os.getpid())
        _, pidfd = _sandbox_process(
            supervisor, ticks, lambda p: _mount_namespace(p) not in (None, ours)
        )
        failure: list[BaseException] = []

        def inside() -> None:
            try:
                _attach_inside(pidfd, trees, uid_base)
            except BaseException as error:  # handed to the caller's thread
                failure.append(error)

        try:
            thread = threading.Thread(target=inside, name="volume-attach")
            thread.start()
            thread.join()
        finally:
            os.close(pidfd)
        if failure:
            raise failure[0]
    finally:
        for tree, _ in trees:
            os.close(tree)
