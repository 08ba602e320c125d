"""The data stack: the code-interpreter template's Python packages, built once and cached.

E2B's code-interpreter template has numpy, pandas, matplotlib and the rest installed for its
kernels. Here they are wheels from PyPI, every one pinned with its hashes in
`data_stack.txt` (compiled from `data_stack.in`), installed with `pip install --target`. The
result is a filesystem layer, `<cache_dir>/data-stack-<digest>/`, next to the base root
filesystem's cache: the packages at INSIDE and a `.pth` file (PTH_INSIDE) naming them. The
digest covers the lock, the Python major.minor and the architecture (the wheels' ABI) and
FORMAT_VERSION, so a changed lock builds a new layer and never touches the old one (running
sandboxes may have it mounted; delete old ones by hand).

Why a layer of its own: the base's recipe digest is shared by every sandbox (a change would
rebuild it for everyone), and the gateway's venv is what the edge imports. A code-interpreter
sandbox's overlay gets the layer as a read-only lower layer above the base, under any of the
template's own (`local.py`), so nothing is bound at start and nothing is written into the
sandbox. The `.pth` file in the image's `dist-packages` puts the packages on the path of
every python3 there, after the image's own: the kernels (started with no PYTHONPATH of the
gateway's, `interpreter_flags`), and `python3` run through commands, see pandas as in E2B's
template, and a package the user installs or upgrades wins over ours.

A build downloads the wheels first (their total is the download size CI pays on a clean
clone), then installs from them with no index, compiling the bytecode: in the sandbox the
layer is read-only and imports must not compile anything. It happens in
`<cache_dir>/.data-stack-build-*` and is renamed into place only once complete, under an
exclusive flock on `<cache_dir>/.data-stack.lock`. Building needs the network (PyPI), not
root. `python -m extproc.lifecycle.data_stack build --cache-dir DIR` builds it with progress
on stderr, a one-line summary, and the path on stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from extproc.core.errors import Unavailable
from extproc.lifecycle.rootfs import cache_lock
from extproc.lifecycle.settings import LocalSettings

# Bump when the way a tree is made changes in a way the lock does not show.
FORMAT_VERSION = 2
LOCK = Path(__file__).with_name("data_stack.txt")
# Where sandboxes see the packages.
INSIDE = "/opt/agentcube/data-stack"
# The .pth file that puts INSIDE on the image's python3 path (Debian's site directory for
# packages installed outside the distribution).
PTH_INSIDE = (
    f"/usr/local/lib/python{sys.version_info.major}.{sys.version_info.minor}"
    "/dist-packages/agentcube-data-stack.pth"
)
_PREFIX = "data-stack-"
_MIB = 1024 * 1024


class DataStackUnavailable(Unavailable):
    """The stack could not be built; the message says why."""


def digest(lock_text: str | None = None) -> str:
    text = LOCK.read_text() if lock_text is None else lock_text
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    fields = json.dumps([FORMAT_VERSION, python, platform.machine(), text])
    return hashlib.sha256(fields.encode()).hexdigest()


def target(cache_dir: Path) -> Path:
    return cache_dir / f"{_PREFIX}{digest()[:16]}"


def cached(cache_dir: Path) -> Path | None:
    """The built stack for this lock in `cache_dir`, or None when it was not built."""
    path = target(cache_dir)
    return path if path.is_dir() else None  # only a finished build has this name


def for_sandboxes(settings: LocalSettings) -> Path | None:
    """The stack code-interpreter sandboxes get: the one built in the lifecycle's rootfs
    cache (`up` and `make rootfs` build it there), or None, and they run without it."""
    return cached(settings.rootfs_cache_dir or settings.state_dir / "rootfs")


def packages(stack: Path) -> Path:
    """The directory of the packages in a built stack (INSIDE, in the layer)."""
    return stack / INSIDE.lstrip("/")


def interpreter_flags(stack: Path | None, isolated: bool) -> list[str]:
    """The interpreter's kernel flags for a sandbox with `stack`: inside one, the kernels'
    path is the image's own, which the .pth file extends; on the host, the packages."""
    if stack is None:
        return []
    return ["--kernel-pythonpath", "" if isolated else str(packages(stack))]


def ensure(cache_dir: Path, progress: Callable[[str], None]) -> Path:
    """The built stack, built now if the cache lacks it (about 2 minutes and 180 MiB of
    downloads the first time)."""
    built = target(cache_dir)
    if built.is_dir():
        progress(f"data stack ready: {built} (cached)")
        return built
    cache_dir.mkdir(parents=True, exist_ok=True)
    with cache_lock(cache_dir / ".data-stack.lock"):
        if built.is_dir():
            progress(f"data stack ready: {built} (built by another process)")
            return built
        for stale in cache_dir.glob(f".{_PREFIX}build-*"):
            progress(f"removing an unfinished data stack build: {stale}")
            shutil.rmtree(stale, ignore_errors=True)
        _build(cache_dir, built, progress)
    return built


def _build(cache_dir: Path, built: Path, progress: Callable[[str], None]) -> None:
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix=f".{_PREFIX}build-", dir=cache_dir))
    try:
        wheels, root = work / "wheels", work / "root"
        site = packages(root)
        count = sum(1 for line in LOCK.read_text().splitlines() if "==" in line)
        progress(f"building the data stack ({count} pinned packages from {LOCK.name})")
        _pip(["download", "--dest", str(wheels)], progress)
        download_mib = sum(p.stat().st_size for p in wheels.iterdir()) / _MIB
        progress(f"installing {download_mib:.0f} MiB of wheels")
        _pip(["install", "--no-index", "--find-links", str(wheels), "--target", str(site)],
             progress)  # fmt: skip
        pth = root / PTH_INSIDE.lstrip("/")
        pth.parent.mkdir(parents=True)
        pth.write_text(f"{INSIDE}\n")
        # Sandboxes read it as an unprivileged host uid: world-readable, whatever the umask.
        subprocess.run(["chmod", "-R", "a+rX", str(root)], check=True)
        installed_mib = _size(site) / _MIB
        subprocess.run(["sync", "--file-system", str(root)], check=False)
        root.rename(built)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    progress(
        f"data stack ready: {built} ({count} packages, {download_mib:.0f} MiB downloaded, "
        f"{installed_mib:.0f} MiB installed, {time.monotonic() - started:.0f} s)"
    )


def _pip(action: list[str], progress: Callable[[str], None]) -> None:
    """Run pip on the lock (hashes required, wheels only, no dependency resolution: the
    lock is complete), passing its `Collecting` lines on as progress."""
    argv = [
        sys.executable, "-m", "pip", *action, "--require-hashes", "--no-deps",
        "--only-binary=:all:", "--disable-pip-version-check", "--no-cache-dir",
        "--progress-bar", "off", "--requirement", str(LOCK),
    ]  # fmt: skip
    tail: deque[str] = deque(maxlen=20)
    with subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    ) as process:  # fmt: skip
        assert process.stdout is not None  # a PIPE
        try:
            for raw in process.stdout:
                line = raw.rstrip()
                tail.append(line)
                if line.startswith("Collecting "):
                    progress(f"data stack: {line.split(' (from', 1)[0].lower()}")
            code = process.wait()
        except BaseException:
            process.terminate()
            process.wait()
            raise
    if code != 0:
        raise DataStackUnavailable(
            f"pip {action[0]} failed (exit {code}) building the data stack:\n" + "\n".join(tail)
        )


def _size(root: Path) -> int:
    return sum(p.lstat().st_size for p in root.rglob("*") if not p.is_symlink() and p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m extproc.lifecycle.data_stack",
        description="build the code-interpreter template's Python packages unless cached",
    )
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    build = sub.add_parser("build", help="build unless the cache has it; print its path")
    build.add_argument(
        "--cache-dir",
        default=os.environ.get("AGENTCUBE_E2B_ROOTFS_CACHE_DIR", "state/rootfs"),
        metavar="DIR",
        help="the base rootfs cache directory (default $AGENTCUBE_E2B_ROOTFS_CACHE_DIR, "
        "else state/rootfs as `up`)",
    )
    args = parser.parse_args(argv)

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        path = ensure(Path(args.cache_dir).absolute(), say)
    except (Unavailable, OSError) as error:
        print(f"data stack: {error}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
