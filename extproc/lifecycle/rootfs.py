"""The base root filesystem of local sandboxes: a minimal Debian, built once and cached.

Every local sandbox sees this tree read-only as the lower layer of an overlay of its own.
It is built with `mmdebstrap --variant=minbase` from the host's own apt sources and suite,
so it needs nothing but the Debian packages `up` already installs, no image registry and no
mirror name in this code: the sources are the host's file, pasted in on stdin. The package
set is what E2B's `base` template has; the account `user` (uid 1000, passwordless sudo) is
made by a customize hook. The hook also replaces the host's /etc/hostname and
/etc/resolv.conf, which mmdebstrap copies in, so nothing of the host stays in the image:
/etc/resolv.conf is empty (the sandbox network provides a resolver, if any), and the
sandbox's hostname resolves through libnss-myhostname (else sudo warns on every call).

mmdebstrap writes a tar, extracted as root with numeric ids: the tree has ordinary Debian
ownership (root-owned files, setuid sudo) whatever accounts the host has. Building needs
root; rootless isolation is not supported yet.

Cache: `<cache_dir>/base-<digest>/`, the digest covering every input of the recipe (suite,
packages, setup script, architecture, FORMAT_VERSION), so a changed recipe builds a new
base. A build happens in `<cache_dir>/.build-*` and is renamed into place only once
complete; a crashed build's leftovers are removed by the next build. One exclusive flock
on `<cache_dir>/.lock` serialises builders across processes. Old bases are left alone
(running sandboxes may still use them); delete them by hand.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from extproc.core.errors import Unavailable

# Bump when the way a base is made changes in a way the other inputs do not show.
FORMAT_VERSION = 1
PACKAGES = (
    "bash", "coreutils", "procps", "sudo", "curl", "git", "python3", "python3-pip",
    "python3-venv", "python-is-python3", "ca-certificates", "iproute2", "less", "nano",
    "passwd", "hostname", "libnss-myhostname",
)  # fmt: skip
# Run inside the chroot by mmdebstrap's customize hook.
SETUP_SCRIPT = """\
set -eu
groupadd --gid 1000 user
useradd --uid 1000 --gid 1000 --groups sudo --shell /bin/bash \\
  --home-dir /home/user --create-home user
printf 'user ALL=(ALL:ALL) NOPASSWD: ALL\\n' > /etc/sudoers.d/user
chmod 0440 /etc/sudoers.d/user
visudo -cqf /etc/sudoers.d/user
printf 'sandbox\\n' > /etc/hostname
printf '127.0.0.1\\tlocalhost\\n::1\\tlocalhost ip6-localhost ip6-loopback\\n' > /etc/hosts
: > /etc/resolv.conf
"""
_OS_RELEASE = Path("/etc/os-release")
_APT = Path("/etc/apt")
_MIB = 1024 * 1024
_PREBUILT_HINT = (
    "elsewhere, pass --rootfs-dir DIR with a prebuilt root filesystem "
    "(a Debian-like tree whose python3 matches the gateway's Python)"
)


class RootfsUnavailable(Unavailable):
    """The base cannot be built here; the message says why and what to do."""


@dataclass(frozen=True)
class Recipe:
    """Everything a base is built from; `digest` names its cache directory."""

    suite: str
    packages: tuple[str, ...] = PACKAGES
    setup_script: str = SETUP_SCRIPT
    architecture: str = platform.machine()
    format_version: int = FORMAT_VERSION

    def digest(self) -> str:
        fields = [self.format_version, self.suite, self.architecture, list(self.packages)]
        text = json.dumps([*fields, self.setup_script])
        return hashlib.sha256(text.encode()).hexdigest()


def parse_os_release(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, raw = line.strip().partition("=")
        if sep and not key.startswith("#"):
            parts = shlex.split(raw) if raw else [""]
            values[key] = parts[0] if parts else ""
    return values


def _family(os_release: Mapping[str, str]) -> list[str]:
    return [os_release.get("ID", ""), *os_release.get("ID_LIKE", "").split()]


def host_suite(os_release: Mapping[str, str]) -> str:
    """The apt suite to build: the host's codename (the parent's, on a derivative)."""
    if not {"debian", "ubuntu"} & set(_family(os_release)):
        name = os_release.get("PRETTY_NAME") or os_release.get("ID") or "unknown"
        raise RootfsUnavailable(
            f"cannot build the base rootfs on {name}: building needs a Debian or Ubuntu "
            f"host (its apt sources and release codename); {_PREBUILT_HINT}"
        )
    keys = ["VERSION_CODENAME"]
    if os_release.get("ID") not in ("debian", "ubuntu"):
        keys = ["UBUNTU_CODENAME", "DEBIAN_CODENAME", *keys]
    for key in keys:
        if os_release.get(key):
            return os_release[key]
    raise RootfsUnavailable(
        f"cannot build the base rootfs: {_OS_RELEASE} has no VERSION_CODENAME; {_PREBUILT_HINT}"
    )


def _host_sources(os_release: Mapping[str, str]) -> str:
    """The host's distribution apt sources (deb822 `<id>.sources`, else sources.list)."""
    candidates = [_APT / "sources.list.d" / f"{name}.sources" for name in _family(os_release)]
    for path in [*candidates, _APT / "sources.list"]:
        if path.is_file():
            text = path.read_text()
            lines = (line.strip() for line in text.splitlines())
            if any(line and not line.startswith("#") for line in lines):
                return text
    raise RootfsUnavailable(
        "cannot build the base rootfs: found no apt sources in "
        f"{', '.join(str(p) for p in candidates)} or {_APT / 'sources.list'}; {_PREBUILT_HINT}"
    )


def check_python(rootfs: Path) -> str:
    """Why the image's python3 cannot run the gateway's picod ('' if it can).

    picod runs on the image's python3 with the gateway venv's site-packages bound in, whose
    C extensions are built for one major.minor. Reads the /usr/bin/python3 symlink only.
    """
    wanted = f"python{sys.version_info.major}.{sys.version_info.minor}"
    link = rootfs / "usr" / "bin" / "python3"
    try:
        target = link.readlink().name
    except OSError:
        return f"the root filesystem {rootfs} has no /usr/bin/python3 symlink to a python3.X"
    if target != wanted:
        return (
            f"the root filesystem {rootfs} has {target} but the gateway runs {wanted}: picod "
            f"inside needs the same major.minor (the venv's C extensions); run the gateway "
            f"on {target}, or use a rootfs whose python3 is {wanted}"
        )
    return ""


def ensure_base(cache_dir: Path, progress: Callable[[str], None]) -> Path:
    """The extracted base root filesystem for this host, built on first use (~40 s)."""
    try:
        os_release = parse_os_release(_OS_RELEASE.read_text())
    except OSError as error:
        raise RootfsUnavailable(
            f"cannot build the base rootfs: cannot read {_OS_RELEASE} ({error}); {_PREBUILT_HINT}"
        ) from error
    recipe = Recipe(suite=host_suite(os_release))
    target = cache_dir / f"base-{recipe.digest()[:16]}"
    if target.is_dir():  # only a finished build is ever renamed to this name
        progress(f"base rootfs ready: {target} (cached)")
        return target
    if os.geteuid() != 0:
        raise RootfsUnavailable(
            "building the base rootfs needs root (the image holds root-owned and setuid "
            "files); rootless mode is not supported yet"
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    with cache_lock(cache_dir / ".lock"):
        if target.is_dir():
            progress(f"base rootfs ready: {target} (built by another process)")
            return target
        _remove_stale_builds(cache_dir, progress)
        _build(recipe, _host_sources(os_release), cache_dir, target, progress)
    return target


@contextlib.contextmanager
def cache_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (made if missing): one builder per cache entry."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _build(
    recipe: Recipe, sources: str, cache_dir: Path, target: Path, progress: Callable[[str], None]
) -> None:
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=cache_dir))
    work.chmod(0o755)  # apt downloads as _apt into mmdebstrap's tempdir inside
    try:
        tar = work / "base.tar"
        progress(f"building the base rootfs ({recipe.suite}, {len(recipe.packages)} packages)")
        _mmdebstrap(recipe, sources, tar, work, progress)
        size_mib = tar.stat().st_size // _MIB
        progress(f"extracting {size_mib} MiB")
        root = work / "root"
        root.mkdir()
        extract = ["tar", "-xf", str(tar), "-C", str(root), "--numeric-owner"]
        result = subprocess.run(
            [*extract, "--xattrs", "--xattrs-include=*"], capture_output=True, text=True
        )
        if result.returncode != 0:
            raise RootfsUnavailable(f"extracting the base rootfs failed: {result.stderr[-2000:]}")
        tar.unlink()
        root.chmod(0o755)
        # The rename below must not outrun the files on a power loss (syncfs of this one
        # filesystem, not os.sync of all).
        subprocess.run(["sync", "--file-system", str(root)], check=False)
        root.rename(target)
    finally:
        _remove(work, progress)
    progress(f"base rootfs ready: {target} ({size_mib} MiB, {time.monotonic() - started:.0f} s)")


def _mmdebstrap(
    recipe: Recipe, sources: str, tar: Path, work: Path, progress: Callable[[str], None]
) -> None:
    mmdebstrap = shutil.which("mmdebstrap")
    if mmdebstrap is None:
        raise RootfsUnavailable(
            "cannot build the base rootfs: mmdebstrap is not installed "
            "(apt-get install -y mmdebstrap)"
        )
    script = work / "setup.sh"
    script.write_text(recipe.setup_script)
    hook = f'chroot "$1" /bin/sh < {shlex.quote(str(script))}'
    argv = [
        mmdebstrap, "--mode=root", "--variant=minbase", "--format=tar",
        f"--include={','.join(recipe.packages)}", f"--customize-hook={hook}",
        recipe.suite, str(tar), "-",
    ]  # fmt: skip
    tail: deque[str] = deque(maxlen=20)
    env = {**os.environ, "TMPDIR": str(work)}  # its chroot beside ours, not in a small /tmp
    with subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as process:
        assert process.stdin is not None and process.stderr is not None  # both are PIPEs
        try:
            try:
                process.stdin.write(sources)
            except BrokenPipeError:
                pass  # it failed before reading them: its stderr says why
            finally:
                with contextlib.suppress(BrokenPipeError):
                    process.stdin.close()
            for raw in process.stderr:
                line = raw.rstrip()
                tail.append(line)
                if line[:2] in ("I:", "W:", "E:"):
                    progress(line)
            code = process.wait()
        except BaseException:
            process.terminate()  # mmdebstrap unmounts and cleans up on SIGTERM
            process.wait()
            raise
    if code != 0:
        raise RootfsUnavailable(
            f"mmdebstrap failed (exit {code}) building the base rootfs:\n" + "\n".join(tail)
        )


def _remove_stale_builds(cache_dir: Path, progress: Callable[[str], None]) -> None:
    for stale in cache_dir.glob(".build-*"):
        progress(f"removing an unfinished build: {stale}")
        _remove(stale, progress)


def _remove(path: Path, progress: Callable[[str], None]) -> None:
    """rmtree, unless something is still mounted inside (a killed mmdebstrap's /proc or
    /dev binds): deleting through those would delete the host's files."""
    prefix = str(path.resolve()) + "/"
    mounts = [
        line.split()[4]
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if line.split()[4].startswith(prefix)
    ]
    if mounts:
        progress(f"not removing {path}: still mounted inside: {', '.join(mounts)}")
        return
    shutil.rmtree(path, ignore_errors=True)
