"""The two kinds of path a volume takes, checked before anything touches a file.

Mount paths (E2B's `volumeMounts[].path`) are where a volume appears inside a sandbox:
absolute, normalised, never `/`, and never over (or above) what the sandbox's own machinery
lives in: `/proc`, `/sys`, `/dev` (made by the sandbox's init) and the gateway's runtime at
`/opt/agentcube` (picod itself runs from there, so hiding it would break the sandbox). Two
mounts may not share a path or nest, which would make one volume's directory the other's
mount point.

Content paths (the content API's `path` query) name an entry inside a volume, relative to
its root whatever slashes lead: `..` is refused rather than resolved, so no spelling of a
path leaves the volume, and the walk that follows it refuses symlinks (`volume_files`).
"""

from __future__ import annotations

from collections.abc import Sequence

from extproc.core.errors import InvalidArgument
from extproc.core.volumes import check_volume_name
from extproc.lifecycle.sandboxes import VolumeMount
from extproc.lifecycle.spawning import RUNTIME

PATH_MAX = 4096
NAME_MAX = 255
MAX_MOUNTS = 16
# Inside a sandbox: made by its init, or the gateway's own runtime (see the module docstring).
RESERVED = ("/proc", "/sys", "/dev", RUNTIME)


def _parts(raw: str, what: str) -> tuple[str, ...]:
    if "\x00" in raw:
        raise InvalidArgument(f"{what} {raw[:80]!r} contains a NUL character")
    if len(raw.encode("utf-8", "surrogatepass")) > PATH_MAX:
        raise InvalidArgument(f"{what} is longer than {PATH_MAX} bytes")
    parts = tuple(part for part in raw.split("/") if part not in ("", "."))
    for part in parts:
        if part == "..":
            raise InvalidArgument(f"{what} {raw[:80]!r} must not contain '..'")
        if len(part.encode("utf-8", "surrogatepass")) > NAME_MAX:
            raise InvalidArgument(f"{what} {raw[:80]!r} has a name longer than {NAME_MAX} bytes")
    return parts


def _within(path: str, ancestor: str) -> bool:
    return path == ancestor or path.startswith(ancestor.rstrip("/") + "/")


def mount_path(raw: str) -> str:
    """`raw` as a normalised absolute mount path, or InvalidArgument saying why not."""
    if not raw.startswith("/"):
        raise InvalidArgument(f"volume mount path {raw[:80]!r} must be absolute")
    parts = _parts(raw, "volume mount path")
    if not parts:
        raise InvalidArgument("a volume cannot be mounted at /")
    path = "/" + "/".join(parts)
    for reserved in RESERVED:
        if _within(path, reserved) or _within(reserved, path):
            raise InvalidArgument(
                f"volume mount path {path!r} would cover {reserved}, which the sandbox "
                "needs for itself"
            )
    return path


def checked_mounts(asked: Sequence[VolumeMount]) -> tuple[VolumeMount, ...]:
    """`asked` with names checked and paths normalised, distinct and not nested in one
    another."""
    if len(asked) > MAX_MOUNTS:
        raise InvalidArgument(f"at most {MAX_MOUNTS} volume mounts per sandbox")
    mounts = tuple(VolumeMount(check_volume_name(m.name), mount_path(m.path)) for m in asked)
    for index, mount in enumerate(mounts):
        for other in mounts[:index]:
            if mount.path == other.path:
                raise InvalidArgument(f"two volumes are mounted at {mount.path!r}")
            if _within(mount.path, other.path) or _within(other.path, mount.path):
                raise InvalidArgument(
                    f"volume mount paths {other.path!r} and {mount.path!r} are nested"
                )
    return mounts


def content_path(raw: str) -> tuple[str, ...]:
    """The names from a volume's root to the entry `raw` names; () is the root itself."""
    if not raw:
        raise InvalidArgument("path must not be empty")
    return _parts(raw, "path")


def shown(parts: Sequence[str]) -> str:
    """How a content path is reported back (E2B's entries carry absolute paths)."""
    return "/" + "/".join(parts)
