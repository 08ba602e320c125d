"""An image with no Python at all, and picod's bundle to inject into it.

The stand-in for a container image is a root directory run under bubblewrap: busybox (the
static build: the root has no libc either) and its applet links, plus `/bin/bash` and
`/bin/nohup` as sh scripts (SCRIPTS).
The bundle is built once per test session by `agentcube-e2b picod-bundle`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Collection
from pathlib import Path

import pytest

BUSYBOX = shutil.which("busybox")
BWRAP = shutil.which("bwrap")
# What the tests' start and ready commands use too (sleep, test, pwd).
APPLETS = ("sh", "echo", "cat", "ls", "env", "cp", "mkdir", "id", "true", "sleep", "test",
           "pwd")  # fmt: skip
# Scripts standing in for what busybox-static lacks or the SDK expects at a fixed path: the
# SDK runs `/bin/bash -l -c ...`; the lifecycle starts a template's start command with
# nohup (Debian's busybox has no nohup applet; ignoring SIGHUP is what it does, the output
# is redirected already).
SCRIPTS = {"bash": 'exec /bin/sh "$@"', "nohup": 'trap "" HUP\nexec "$@"'}


def require_tools() -> None:
    """Skip (saying what to install) where busybox-static or bubblewrap is missing."""
    if BUSYBOX is None or BWRAP is None:
        pytest.skip("needs busybox (apt-get install busybox-static) and bwrap")
    linked = subprocess.run(["ldd", BUSYBOX], capture_output=True, text=True)
    if "not a dynamic executable" not in linked.stdout + linked.stderr:
        pytest.skip(f"{BUSYBOX} is not a static build (apt-get install busybox-static)")


def session_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`agentcube-e2b picod-bundle`, from this venv, built once per test session (the
    directories that use it share the session's base temporary directory)."""
    out = tmp_path_factory.getbasetemp() / "picod-bundle"
    if not out.exists():
        cli = str(Path(sys.executable).with_name("agentcube-e2b"))
        building = out.with_name("picod-bundle.partial")
        shutil.rmtree(building, ignore_errors=True)
        subprocess.run([cli, "picod-bundle", "--out", str(building)], check=True,
                       capture_output=True)  # fmt: skip
        building.rename(out)
    return out


def image_roots(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the gateway image, an image with no Python) as root filesystems, made once per
    session: the gateway image's part that matters here is the bundle where the init
    container copies it from (manifests.BUNDLE_SOURCE), and a `cp`."""
    from extproc.lifecycle.manifests import BUNDLE_SOURCE

    base = tmp_path_factory.getbasetemp()
    gateway, busybox = base / "gateway-image", base / "busybox-image"
    if not busybox.exists():
        bundle = session_bundle(tmp_path_factory)
        shutil.rmtree(gateway, ignore_errors=True)
        busybox_root(gateway)
        shutil.copytree(bundle, gateway / BUNDLE_SOURCE.lstrip("/"), copy_function=os.link)
        busybox_root(busybox)
    return gateway, busybox


def busybox_root(root: Path) -> Path:
    """A root filesystem with busybox and nothing else: no Python, no libc."""
    assert BUSYBOX is not None
    for directory in ("bin", "tmp", "home/user", "proc", "dev", "etc"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, root / "bin/busybox")
    for applet in APPLETS:
        (root / "bin" / applet).symlink_to("busybox")
    for name, body in SCRIPTS.items():
        script = root / "bin" / name
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(0o755)
    return root


def in_root(
    root: Path, binds: dict[str, Path], argv: list[str], env: dict[str, str],
    read_only: Collection[str] = (),
) -> list[str]:  # fmt: skip
    """`argv` run as a container would be: `root` as /, each of `binds` (container path ->
    host directory) mounted (read-only for the paths in `read_only`), its own pid namespace
    (so nothing it starts outlives it), a fresh /proc and /dev, only `env` in the
    environment. The host's network: the fake kubelet gives each pod a loopback address."""
    assert BWRAP is not None
    words = [BWRAP, "--bind", str(root), "/", "--proc", "/proc", "--dev", "/dev", "--clearenv",
             "--unshare-pid", "--die-with-parent"]  # fmt: skip
    for inside, host in binds.items():
        words += ["--ro-bind" if inside in read_only else "--bind", str(host), inside]
    for name, value in env.items():
        words += ["--setenv", name, value]
    return [*words, "--", *argv]
