"""Filesystem-only pause: a sandbox's processes end, its files stay, and a resume starts it
afresh on them (E2B's pause with `memory: false`, reported as `pauseMode: "filesystem"`).

A resume is a start without a create, so the pause keeps everything a start would make:
- the sandbox's directory, and with isolation its root filesystem still mounted (the ext4
  image of its writable layer, the id-mapped base and the overlay, made by `mounting` in the
  host's mount namespace, where they outlive a lifecycle restart as the directory does), so
  the identity files and JWT key written there at create stay too;
- its network namespace, address and internet rule: `ip netns` keeps a namespace with no
  process in it, so the sandbox's endpoint and routes do not change;
- its id, token, env vars, metadata and timeout, in SQLite like any live sandbox.
What goes: every process (killing the supervisor's group ends the sandbox's pid namespace,
and with it its mount, UTS and IPC namespaces), its cgroups (made again on resume, with
fresh counters) and its user namespace, which only processes held. A new user namespace
with the same id mapping (`uid_base`, derived from the address) sees the kept files as the
old one did, so ownership inside is unchanged.

Why not unmount while paused: a remount would need the layer's mount steps split out of
`mounting.mount_root`, and a mounted, idle ext4 image costs nothing but a loop device. The
price is the reboot case: after one, nothing is mounted and `files_kept` is False, so
re-adoption ends the sandbox as "died", as it does running ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from extproc.core.errors import Unavailable
from extproc.lifecycle import mounting, spawning
from extproc.lifecycle.isolation import Isolation
from extproc.lifecycle.sandboxes import Sandbox
from extproc.lifecycle.templates import Template


def files_kept(sandbox: Sandbox, directory: Path, isolation: Isolation | None) -> bool:
    """True if what a filesystem-paused `sandbox` (kept in `directory`) resumes on is still
    there."""
    if isolation is None:
        return (directory / "home").is_dir()
    link = isolation.networks.link_of(sandbox.sandbox_id, sandbox.endpoint_host)
    root = mounting.SandboxRoot(directory, 0).root
    return link is not None and link.netns_path.exists() and os.path.ismount(root)


async def launch_of(
    sandbox: Sandbox, template: Template, directory: Path, isolation: Isolation | None,
    max_processes: int,
) -> spawning.Launch:  # fmt: skip
    """The launch that starts a filesystem-paused `sandbox` again on what it kept in
    `directory`; the caller closes its `userns_fd`. Unavailable if its files are gone."""
    sandbox_id, host = sandbox.sandbox_id, sandbox.endpoint_host
    if not files_kept(sandbox, directory, isolation):
        raise Unavailable(
            f"sandbox {sandbox_id} cannot resume: the files it was paused with are gone"
        )
    if isolation is None:
        paths = mounting.SandboxRoot(directory, 0)
        return spawning.Launch(sandbox_id, sandbox.envd_access_token, host, paths,
                               sandbox.memory_mb, sandbox.env_vars,
                               interpreter=template.interpreter)  # fmt: skip
    link = isolation.networks.link_of(sandbox_id, host)
    if link is None:  # files_kept has checked it; this is for the type checker
        raise Unavailable(f"sandbox {sandbox_id} has no network to resume in")
    paths = isolation.paths(sandbox_id, host)

    def prepare() -> tuple[int, list[Path]]:
        userns_fd = mounting.new_user_namespace(paths.uid_base)
        try:
            cgroups = isolation.cgroups.prepare(sandbox_id, sandbox.memory_mb, max_processes)
            # Set again: the hub's rule may predate a restart of the hub.
            isolation.allow_internet(sandbox_id, host, sandbox.allow_internet_access)
        except BaseException:
            os.close(userns_fd)
            raise
        return userns_fd, cgroups

    # Shielded like a create's: a cancelled resume must not leak the namespace's fd.
    preparing = asyncio.ensure_future(asyncio.to_thread(prepare))
    try:
        userns_fd, cgroups = await asyncio.shield(preparing)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            os.close((await preparing)[0])
        raise
    return spawning.Launch(
        sandbox_id, sandbox.envd_access_token, host, paths, sandbox.memory_mb,
        sandbox.env_vars, interpreter=template.interpreter, netns=link.netns_path,
        userns_fd=userns_fd, cgroups=cgroups,
    )  # fmt: skip
