"""Everything a local sandbox is confined by, set up before its processes start and taken
down after they are gone: network (`networking`), users and root filesystem (`mounting`),
limits (`limits`). The steps block (`ip`, `mkfs`, mounts), so callers run them in a thread;
each step undoes what it did when a later one fails, so nothing half-made is left.

Fail closed: `start` refuses (Unavailable) when the host lacks anything the namespaces need,
naming the Debian packages to install; `--isolation none` is the only way around it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from extproc.core.errors import Unavailable
from extproc.lifecycle import host_support, mounting, networking, rootfs
from extproc.lifecycle.limits import Cgroups
from extproc.lifecycle.pooling import BACKGROUND, REFILL_NICE
from extproc.lifecycle.settings import LocalSettings
from extproc.lifecycle.spawning import JWT_KEY_INSIDE, SANDBOX_ENV, runtime_dirs
from extproc.lifecycle.zygote import Zygote

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _thread_priority(nice: int | None) -> Iterator[None]:
    """Run the block with this thread (and the processes it starts) at `nice`; None: as
    it is. Linux keeps a niceness per thread."""
    if nice is None:
        yield
        return
    thread = threading.get_native_id()
    before = os.getpriority(os.PRIO_PROCESS, thread)
    os.setpriority(os.PRIO_PROCESS, thread, nice)
    try:
        yield
    finally:
        os.setpriority(os.PRIO_PROCESS, thread, before)


@dataclass(frozen=True)
class Confined:
    """A prepared sandbox: where its processes go (the caller closes `userns_fd`)."""

    link: networking.SandboxLink
    paths: mounting.SandboxRoot
    userns_fd: int
    cgroups: list[Path]


class Isolation:
    def __init__(self, settings: LocalSettings, sandboxes_dir: Path) -> None:
        self.settings = settings
        self.sandboxes_dir = sandboxes_dir
        self.networks = networking.Networks(
            settings.state_dir, networking.egress_choice(settings.egress)
        )
        self.hub_sockets = networking.HubSockets(self.networks.hub)
        self.cgroups = Cgroups("none", "")
        self.base: Path | None = None
        # The pre-imported picod every sandbox is forked from (started with the base).
        self.zygote: Zygote | None = None

    def start(self) -> None:
        refused = host_support.refusal()
        if refused:
            raise Unavailable(refused)
        cache = self.settings.rootfs_cache_dir or self.settings.state_dir / "rootfs"
        self.base = rootfs.ensure_base(cache, lambda line: log.info("rootfs: %s", line))
        wrong_python = rootfs.check_python(self.base)
        if wrong_python:
            raise Unavailable(wrong_python)
        self.networks.start()
        prefix = networking.netns_prefix(self.settings.state_dir)
        self.cgroups = Cgroups.detect(f"agentcube-e2b-{prefix}")
        self.zygote = Zygote(
            self.base, runtime_dirs(), SANDBOX_ENV, self.settings.state_dir / "zygote.log",
            preload_jwt=self.settings.jwt_public_key is not None,
        )  # fmt: skip
        self.zygote.start()

    def paths(self, sandbox_id: str, host: str) -> mounting.SandboxRoot:
        link = self.networks.link_of(sandbox_id, host)
        base = mounting.uid_base(link.index) if link else 0
        return mounting.SandboxRoot(self.sandboxes_dir / sandbox_id, base)

    def confine(self, sandbox_id: str, memory_mb: int, layers: tuple[Path, ...] = ()) -> Confined:
        """Network, users, root filesystem (`layers`, top first, over the base) and cgroups
        for a sandbox about to start."""
        if self.base is None:
            raise RuntimeError("isolation not started")
        with _thread_priority(REFILL_NICE if BACKGROUND.get() else None):
            return self._confine(self.base, sandbox_id, memory_mb, layers)

    def _confine(
        self, base: Path, sandbox_id: str, memory_mb: int, layers: tuple[Path, ...]
    ) -> Confined:
        link = self.networks.create(sandbox_id)
        userns_fd = None
        try:
            paths = mounting.SandboxRoot(self.sandboxes_dir / sandbox_id,
                                         mounting.uid_base(link.index))  # fmt: skip
            userns_fd = mounting.new_user_namespace(paths.uid_base)
            mounting.mount_root(paths, base, userns_fd, self.settings.layer_mb, sandbox_id, layers)
            key = self.settings.jwt_public_key
            if key is not None:  # public: written into the root, no bind needed
                (paths.root / JWT_KEY_INSIDE.lstrip("/")).write_bytes(key.read_bytes())
            cgroups = self.cgroups.prepare(sandbox_id, memory_mb, self.settings.max_processes)
        except BaseException:
            if userns_fd is not None:
                os.close(userns_fd)
            self.release(sandbox_id, link.address)
            raise
        return Confined(link, paths, userns_fd, cgroups)

    def release(self, sandbox_id: str, host: str) -> None:
        """Undo `confine` (idempotent; the sandbox's processes must be gone)."""
        link = self.networks.link_of(sandbox_id, host)
        if link is not None:
            self.networks.release(link)
        else:
            networking.remove_netns(
                networking.sandbox_netns_name(self.settings.state_dir, sandbox_id)
            )
        directory = self.sandboxes_dir / sandbox_id
        mounting.unmount_root(mounting.SandboxRoot(directory, 0))
        self.cgroups.remove(sandbox_id)
        shutil.rmtree(directory, ignore_errors=True)

    def allow_internet(self, sandbox_id: str, host: str, allowed: bool) -> None:
        link = self.networks.link_of(sandbox_id, host)
        if link is not None:
            self.networks.allow_internet(link, allowed)

    def remove_strays(self, keep: set[str]) -> None:
        """Network namespaces of sandboxes not in `keep` (after a crash mid-start)."""
        prefix = networking.netns_prefix(self.settings.state_dir) + "-"
        for netns in networking.NETNS_DIR.glob(prefix + "*"):
            name = netns.name.removeprefix(prefix)
            if name != "hub" and name not in keep:
                networking.remove_netns(netns.name)

    def close(self, survivors: bool) -> None:
        """Stop; without survivors the hub, its uplink and the parent cgroups go too (the
        next start makes them again). Survivors keep their uplink: pasta runs on in its own
        session and the next start finds it."""
        self.hub_sockets.close()
        if self.zygote is not None:
            self.zygote.close()
        if survivors:
            return
        self.remove_strays(set())
        with contextlib.suppress(OSError):
            self.networks.remove_hub()
        self.cgroups.remove_group()
