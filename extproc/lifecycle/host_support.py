"""What the namespace isolation of local sandboxes needs from the host, and what is missing.

`up` refuses to start sandboxes without it (fail closed) and prints the sentences and the
`apt-get` line; `--isolation none` is the explicit, unsafe way out. Binaries are looked up
on the process PATH, so a PATH without `nft` reads as nftables missing. Every sentence that a
package fixes ends with "install the Debian package NAME"; `apt_install_line` reads the
names from there, so the sentences stay the one source. The packages are the ones in
packaging/debian-packages.txt, which `make up`, `make test` and .ci/run install.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

# (binary, Debian package, what the isolation does with it). No bubblewrap: it always sets
# no_new_privs, under which `sudo` cannot work (see lifecycle/spawning.py).
BINARIES = (
    ("mmdebstrap", "mmdebstrap", "builds the sandboxes' base root filesystem"),
    ("nft", "nftables", "filters each sandbox's network"),
    ("ip", "iproute2", "creates each sandbox's network namespace and veth pair"),
    ("nsenter", "util-linux", "enters sandbox namespaces"),
    ("unshare", "util-linux", "creates namespaces"),
    ("mount", "mount", "mounts each sandbox's root filesystem"),
    ("mkfs.ext4", "e2fsprogs", "formats each sandbox's writable layer"),
)
_PACKAGE = re.compile(r"install the Debian package ([a-z0-9][a-z0-9.+-]*)")


def _package_hint(package: str) -> str:
    return f"install the Debian package {package}"


def missing_for_isolation() -> list[str]:
    """One sentence per thing this host lacks for sandbox isolation ([] if nothing)."""
    missing: list[str] = []
    for binary, package, purpose in BINARIES:
        if shutil.which(binary) is None:
            missing.append(f"`{binary}` ({purpose}) is not on PATH: {_package_hint(package)}")
    if os.geteuid() != 0:
        missing.append(
            "the gateway is not running as root: the isolation creates veth pairs and "
            "id-mapped mounts, and rootless mode is not supported yet; run as root, or pass "
            "--isolation none to run sandboxes unisolated (unsafe: sandboxes can reach the "
            "host and each other)"
        )
    if _max_user_namespaces() == 0:
        missing.append(
            "user namespaces are disabled (/proc/sys/user/max_user_namespaces is 0): "
            "enable them with `sysctl -w user.max_user_namespaces=65536`"
        )
    if not _has_overlayfs():
        missing.append(
            "the kernel has no overlayfs (`overlay` is not in /proc/filesystems and there is "
            "no module to load): load it with `modprobe overlay` or use a kernel that has it"
        )
    return missing


def refusal() -> str:
    """Why this host cannot isolate sandboxes and how to fix it ('' when it can): the one
    message `up` and the lifecycle service refuse to start with."""
    missing = missing_for_isolation()
    if not missing:
        return ""
    install = apt_install_line(missing)
    return (
        "cannot isolate sandboxes on this host: " + "; ".join(missing)
        + (f". Install with: {install}" if install else "")
        + ". Or run with --isolation none (UNSAFE: tenants' code then runs as this user "
        "with this machine's files and network)."
    )  # fmt: skip


def apt_install_line(missing: Iterable[str]) -> str:
    """`apt-get install -y PKG...` for the packages named in `missing` ('' if none)."""
    packages: list[str] = []
    for sentence in missing:
        for package in _PACKAGE.findall(sentence):
            if package not in packages:
                packages.append(package)
    return f"apt-get install -y {' '.join(packages)}" if packages else ""


def _max_user_namespaces() -> int:
    try:
        return int(Path("/proc/sys/user/max_user_namespaces").read_text())
    except (OSError, ValueError):
        return 0


def _has_overlayfs() -> bool:
    try:
        if "overlay" in Path("/proc/filesystems").read_text().split():
            return True
    except OSError:
        pass
    # Not loaded yet: the kernel loads the module on the first overlay mount.
    modules = Path("/lib/modules") / os.uname().release
    return (modules / "kernel" / "fs" / "overlayfs").is_dir()
