"""Read-only filesystem layers: what built templates and snapshots add on top of the base.

A layer is a sandbox's writable layer frozen: a copy of its overlayfs upper directory, in
overlayfs's own format (a deleted file is a 0/0 character device, a directory that hides
what lies below carries `trusted.overlay.opaque`), so a stack of layers over the base is
just more `lowerdir`s of a later sandbox's overlay (`mounting.mount_root`). A template's
build adds one layer per step that changes files (RUN, COPY); a snapshot adds one.

Ownership. A sandbox writes its files with its own block of host ids (`mounting.uid_base`:
its `user` 1000 is host id base + 1000). A frozen layer is stored with the ids the sandbox
saw (host id - base: 0..65535), as the base image is, so every later sandbox shows it
through an id-mapped bind of its own, exactly like the base. Ids outside the block (files
the host made as root, such as the mount points of the runtime) become 65534, nobody.
chown clears setuid bits, so the mode is set again after it.

Ids: a build step's layer is named by its cache key (`build_steps.cache_key`: tenant,
parent layer, step), so a rebuild with the same prefix finds it; a snapshot's is random.

Lifetime. A layer lives while something uses it: a template's build, a sandbox mounted from
it (its directory's `layers.json`, written before the mount and removed with the
directory), or a build or create in progress (`pin`). `collect` removes the rest, so
deleting a template that a running sandbox or a child template still uses is allowed: the
files stay until the last user is gone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import stat
import subprocess
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from extproc.core.errors import Unavailable

log = logging.getLogger(__name__)

ID_BLOCK = 65536
NOBODY = 65534
# What a sandbox directory holds when its root was mounted from layers: their ids, top first.
SANDBOX_LAYERS_FILE = "layers.json"
_META = "layer.json"
_TREE = "tree"


@dataclass(frozen=True)
class Layer:
    layer_id: str
    # The tenant whose sandbox or build made it: a cache hit is only ever a tenant's own.
    tenant: str
    created_at: float
    # Bytes the tree takes on disk.
    size: int


def new_layer_id() -> str:
    return "s" + secrets.token_hex(16)


def _canonical(host_id: int, base: int) -> int:
    inside = host_id - base
    return inside if 0 <= inside < ID_BLOCK else NOBODY


def shift_ownership(tree: Path, base: int) -> int:
    """Give every entry of `tree` the id the sandbox saw (see the module docstring);
    returns the bytes the tree takes. Never follows a symlink: the tree is a stranger's."""
    used = 0
    for directory, dirs, files in os.walk(tree):
        for name in (*dirs, *files):
            path = Path(directory, name)
            info = path.lstat()
            used += info.st_blocks * 512
            uid, gid = _canonical(info.st_uid, base), _canonical(info.st_gid, base)
            if (uid, gid) == (info.st_uid, info.st_gid):
                continue
            os.lchown(path, uid, gid)
            if stat.S_ISREG(info.st_mode) and info.st_mode & (stat.S_ISUID | stat.S_ISGID):
                path.chmod(stat.S_IMODE(info.st_mode))  # a regular file: no link to follow
    info = os.lstat(tree)
    os.lchown(tree, _canonical(info.st_uid, base), _canonical(info.st_gid, base))
    return used


class LayerStore:
    """The layers of one state directory: `<root>/<id>/tree` and `<root>/<id>/layer.json`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._layers: dict[str, Layer] = {}
        self._pins: Counter[str] = Counter()

    def load(self) -> None:
        """Read what is on disk; half-made layers (a crash mid-freeze) are removed."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)
        for entry in self.root.iterdir():
            if entry.name.startswith("."):
                shutil.rmtree(entry, ignore_errors=True)
                continue
            try:
                raw = json.loads((entry / _META).read_text(encoding="utf-8"))
                layer = Layer(entry.name, str(raw["tenant"]), float(raw["created_at"]),
                              int(raw["size"]))  # fmt: skip
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("layer %s is unreadable (%s); removing it", entry.name, exc)
                shutil.rmtree(entry, ignore_errors=True)
                continue
            self._layers[layer.layer_id] = layer

    def get(self, layer_id: str, tenant: str) -> Layer | None:
        """The layer if it exists and `tenant` made it."""
        layer = self._layers.get(layer_id)
        return layer if layer is not None and layer.tenant == tenant else None

    def tree(self, layer_id: str) -> Path:
        return self.root / layer_id / _TREE

    def trees(self, layer_ids: Iterable[str]) -> tuple[Path, ...]:
        missing = [i for i in layer_ids if i not in self._layers]
        if missing:
            raise Unavailable(f"filesystem layer(s) {missing} are gone from this gateway")
        return tuple(self.tree(i) for i in layer_ids)

    def freeze(self, upper: Path, uid_base: int, layer_id: str, tenant: str) -> Layer:
        """Copy a writable layer's upper directory into a new layer (blocking: run it in a
        thread). The source must not change meanwhile (its sandbox is stopped or gone)."""
        staging = self.root / f".staging-{layer_id}-{secrets.token_hex(4)}"
        tree = staging / _TREE
        staging.mkdir(mode=0o700)
        try:
            copied = subprocess.run(
                ["cp", "-a", "--sparse=always", "--reflink=auto", "--no-target-directory",
                 str(upper), str(tree)],
                capture_output=True, check=False,
            )  # fmt: skip
            if copied.returncode != 0:
                raise Unavailable(f"freezing a layer: cp: {copied.stderr.decode().strip()}")
            size = shift_ownership(tree, uid_base)
            layer = Layer(layer_id, tenant, time.time(), size)
            meta = {"tenant": tenant, "created_at": layer.created_at, "size": size}
            (staging / _META).write_text(json.dumps(meta), encoding="utf-8")
            final = self.root / layer_id
            if final.exists():  # the same cache key frozen twice: keep the first
                shutil.rmtree(staging, ignore_errors=True)
                return self._layers.get(layer_id, layer)
            staging.rename(final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self._layers[layer_id] = layer
        return layer

    @contextlib.contextmanager
    def pin(self, layer_ids: Iterable[str]) -> Iterator[None]:
        """Keep `layer_ids` from `collect` while a build or a create uses them."""
        ids = list(layer_ids)
        self._pins.update(ids)
        try:
            yield
        finally:
            self._pins.subtract(ids)
            self._pins += Counter()  # drops the zero counts

    def unused(self, referenced: set[str]) -> list[str]:
        """Layers neither `referenced` nor pinned (decided on the event loop)."""
        return [i for i in self._layers if i not in referenced and not self._pins[i]]

    def remove(self, layer_ids: Iterable[str]) -> None:
        """Forget, then delete (blocking: run it in a thread)."""
        for layer_id in layer_ids:
            self._layers.pop(layer_id, None)
            doomed = self.root / f".removing-{layer_id}-{secrets.token_hex(4)}"
            with contextlib.suppress(FileNotFoundError):
                (self.root / layer_id).rename(doomed)
                shutil.rmtree(doomed, ignore_errors=True)


def sandbox_layers(sandbox_dir: Path) -> tuple[str, ...]:
    """The layer ids a sandbox's root was mounted from (none: the base alone)."""
    try:
        raw = json.loads((sandbox_dir / SANDBOX_LAYERS_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return ()
    except (OSError, ValueError) as exc:
        raise Unavailable(f"{sandbox_dir / SANDBOX_LAYERS_FILE}: unreadable: {exc}") from exc
    return tuple(str(i) for i in raw)


def record_sandbox_layers(sandbox_dir: Path, layer_ids: tuple[str, ...]) -> None:
    sandbox_dir.mkdir(parents=True, exist_ok=True)
    (sandbox_dir / SANDBOX_LAYERS_FILE).write_text(json.dumps(list(layer_ids)), "utf-8")
