"""The base rootfs: the recipe's digest, the cache's build protocol with a fake mmdebstrap on
PATH (atomic rename, lock, progress, failure), and one real build in the shared cache."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from extproc.cli import main
from extproc.lifecycle.rootfs import (
    Recipe,
    RootfsUnavailable,
    check_python,
    ensure_base,
    host_suite,
    parse_os_release,
)

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="building a base needs root")
SUMMARY = re.compile(r"^base rootfs ready: (\S+) \((\d+) MiB, (\d+) s\)$")
PYTHON = f"python{sys.version_info.major}.{sys.version_info.minor}"

# Writes a tiny tar to its TARGET (the argument before the last, `-`), after logging its
# argv and saving its stdin (the apt sources); GATE, when set, is a FIFO it reads first.
FAKE_MMDEBSTRAP = """#!{python}
import io, pathlib, sys, tarfile
log = pathlib.Path({log!r})
with log.open("a") as out:
    out.write(" ".join(sys.argv[1:]) + "\\n")
pathlib.Path({sources!r}).write_text(sys.stdin.read())
print("I: fake mmdebstrap", file=sys.stderr, flush=True)
if {gate!r}:
    open({gate!r}).read()
if {fail!r}:
    print("E: cannot fetch the package lists", file=sys.stderr)
    sys.exit(1)
with tarfile.open(sys.argv[-2], "w") as tar:
    link = tarfile.TarInfo("usr/bin/python3")
    link.type, link.linkname = tarfile.SYMTYPE, {python_name!r}
    tar.addfile(link)
    home = tarfile.TarInfo("home/user")
    # A name the host knows with an id it does not give it: ids must be kept as numbers.
    home.type, home.mode, home.uname = tarfile.DIRTYPE, 0o755, "root"
    home.uid = home.gid = 1234
    tar.addfile(home)
"""


class Fake:
    def __init__(self, tmp_path: Path) -> None:
        self.bin = tmp_path / "bin"
        self.log = tmp_path / "mmdebstrap.log"
        self.sources = tmp_path / "sources.txt"
        self.gate = tmp_path / "gate"
        self.bin.mkdir()

    def install(self, *, fail: bool = False, gated: bool = False) -> None:
        script = self.bin / "mmdebstrap"
        script.write_text(
            FAKE_MMDEBSTRAP.format(
                python=sys.executable,
                log=str(self.log),
                sources=str(self.sources),
                gate=str(self.gate) if gated else "",
                fail=fail,
                python_name=PYTHON,
            )
        )
        script.chmod(0o755)

    def runs(self) -> int:
        return len(self.log.read_text().splitlines()) if self.log.exists() else 0


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Fake:
    fake = Fake(tmp_path)
    monkeypatch.setenv("PATH", f"{fake.bin}:{os.environ['PATH']}")
    return fake


# --- the recipe ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"suite": "trixie"},
        {"packages": ("bash",)},
        {"setup_script": "true\n"},
        {"architecture": "aarch64"},
        {"format_version": 99},
    ],
)
def test_digest_changes_with_every_input(change: dict[str, object]) -> None:
    recipe = Recipe(suite="bookworm")
    assert Recipe(suite="bookworm").digest() == recipe.digest()
    assert replace(recipe, **change).digest() != recipe.digest()  # type: ignore[arg-type]


DEBIAN = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_CODENAME=bookworm\n'
UBUNTU = "ID=ubuntu\nID_LIKE=debian\nVERSION_CODENAME=noble\nUBUNTU_CODENAME=noble\n"
MINT = 'ID=linuxmint\nID_LIKE="ubuntu debian"\nVERSION_CODENAME=vanessa\nUBUNTU_CODENAME=jammy\n'


@pytest.mark.parametrize(
    ("text", "suite"), [(DEBIAN, "bookworm"), (UBUNTU, "noble"), (MINT, "jammy")]
)
def test_host_suite(text: str, suite: str) -> None:
    assert host_suite(parse_os_release(text)) == suite


@pytest.mark.parametrize("text", ['NAME="Fedora Linux"\nID=fedora\nVERSION_ID=40\n', "ID=debian\n"])
def test_host_suite_refuses_other_hosts_naming_the_alternative(text: str) -> None:
    with pytest.raises(RootfsUnavailable, match="--rootfs-dir"):
        host_suite(parse_os_release(text))


def _python_link(root: Path, target: str) -> Path:
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "bin" / "python3").symlink_to(target)
    return root


def test_check_python(tmp_path: Path) -> None:
    assert check_python(_python_link(tmp_path / "same", PYTHON)) == ""
    other = check_python(_python_link(tmp_path / "other", "python3.99"))
    assert "python3.99" in other and PYTHON in other
    assert "no /usr/bin/python3" in check_python(tmp_path / "empty")


# --- building, with a fake mmdebstrap ------------------------------------------------------


@as_root
def test_build_renames_a_complete_tree_and_reports(fake: Fake, tmp_path: Path) -> None:
    fake.install()
    cache = tmp_path / "cache"
    lines: list[str] = []
    base = ensure_base(cache, lines.append)

    assert base.parent == cache and re.fullmatch(r"base-[0-9a-f]{16}", base.name)
    assert sorted(p.name for p in cache.iterdir()) == [".lock", base.name]  # no .build-*
    assert (base / "usr" / "bin" / "python3").readlink() == Path(PYTHON)
    home = (base / "home" / "user").stat()
    assert (home.st_uid, home.st_gid) == (1234, 1234)
    assert stat.S_IMODE(base.stat().st_mode) == 0o755
    assert check_python(base) == ""

    assert lines[0].startswith("building the base rootfs")
    assert "I: fake mmdebstrap" in lines
    assert any(line.startswith("extracting") for line in lines)
    summary = SUMMARY.match(lines[-1])
    assert summary is not None and summary[1] == str(base), lines[-1]
    argv = fake.log.read_text().split()
    assert "--variant=minbase" in argv and argv[-1] == "-"
    assert any(a.startswith("--include=") and "python3-venv" in a for a in argv)
    # The host's apt sources went in on stdin.
    sources = fake.sources.read_text().splitlines()
    assert any(line.strip() and not line.startswith("#") for line in sources)

    again: list[str] = []
    assert ensure_base(cache, again.append) == base
    assert fake.runs() == 1 and again == [f"base rootfs ready: {base} (cached)"]


@as_root
def test_failed_build_leaves_nothing_that_looks_done(fake: Fake, tmp_path: Path) -> None:
    fake.install(fail=True)
    cache = tmp_path / "cache"
    lines: list[str] = []
    with pytest.raises(RootfsUnavailable) as info:
        ensure_base(cache, lines.append)
    assert "exit 1" in info.value.message
    assert "E: cannot fetch the package lists" in info.value.message
    assert "E: cannot fetch the package lists" in lines
    assert [p.name for p in cache.iterdir()] == [".lock"]


@as_root
def test_an_unfinished_build_is_removed_by_the_next(fake: Fake, tmp_path: Path) -> None:
    fake.install()
    cache = tmp_path / "cache"
    (cache / ".build-crashed" / "root" / "etc").mkdir(parents=True)
    lines: list[str] = []
    base = ensure_base(cache, lines.append)
    assert sorted(p.name for p in cache.iterdir()) == [".lock", base.name]
    assert any("removing an unfinished build" in line for line in lines)


@as_root
def test_cli_prints_progress_then_the_path(
    fake: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.install()
    assert main(["rootfs", "build", "--cache-dir", str(tmp_path / "cache")]) == 0
    out, err = capsys.readouterr()
    (base,) = (tmp_path / "cache").glob("base-*")
    assert out == f"{base}\n"
    assert SUMMARY.match(err.splitlines()[-1])


def _blocked_on(lock: Path) -> bool:
    """True when some process or thread waits for the flock on `lock` (/proc/locks `->`)."""
    inode = f":{lock.stat().st_ino} "
    lines = Path("/proc/locks").read_text().splitlines()
    return any("->" in line and inode in line for line in lines)


@contextlib.contextmanager
def _released(gate: Path) -> Iterator[None]:
    try:
        yield
    finally:  # never leave a fake blocked on the gate
        with contextlib.suppress(OSError):
            os.close(os.open(gate, os.O_WRONLY | os.O_NONBLOCK))


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.01)


@as_root
def test_concurrent_callers_build_once(fake: Fake, tmp_path: Path) -> None:
    fake.install(gated=True)
    os.mkfifo(fake.gate)
    cache = tmp_path / "cache"
    results: list[Path | BaseException] = []

    def call() -> None:
        try:
            results.append(ensure_base(cache, lambda line: None))
        except BaseException as error:  # reported by the assertion below
            results.append(error)

    threads = [threading.Thread(target=call) for _ in range(2)]
    with _released(fake.gate):
        for thread in threads:
            thread.start()
        # One caller builds (its mmdebstrap waits at the gate), the other waits for the lock.
        _wait_for(lambda: fake.runs() >= 1, "the first build started")
        _wait_for(
            lambda: fake.runs() > 1 or _blocked_on(cache / ".lock"),
            "the second caller waits for the lock",
        )
        assert fake.runs() == 1, "two builds ran at once"
        fake.gate.write_text("")  # the fake reads EOF and goes on
        for thread in threads:
            thread.join(timeout=60)
    assert len(results) == 2 and results[0] == results[1], results
    assert isinstance(results[0], Path) and results[0].is_dir()
    assert fake.runs() == 1


# --- one real build ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_base() -> Path:
    if os.geteuid() != 0 or shutil.which("mmdebstrap") is None:
        pytest.skip("a real base needs root and mmdebstrap (make test installs it as root)")
    cache = Path(os.environ["AGENTCUBE_E2B_ROOTFS_CACHE_DIR"])  # set by tests/conftest.py
    return ensure_base(cache, lambda line: print(line, file=sys.stderr))


# Runs a command chrooted into a throwaway overlay of the base (own mount namespace, upper
# layer on a tmpfs): the shared base stays as built (sudo writes into /home/user, say).
_OVERLAY_CHROOT = """set -e
mount -t tmpfs scratch "$2"
mkdir "$2/upper" "$2/work" "$2/root"
mount -t overlay overlay -o "lowerdir=$1,upperdir=$2/upper,workdir=$2/work" "$2/root"
exec chroot "$2/root" /bin/sh -c "$3"
"""


def _in_image(base: Path, scratch: Path, command: str) -> str:
    scratch.mkdir(exist_ok=True)
    result = subprocess.run(
        ["unshare", "--mount", "sh", "-c", _OVERLAY_CHROOT, "sh", str(base), str(scratch), command],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LANG": "C.UTF-8"},
    )
    return result.stdout.strip()


@pytest.mark.slow
@pytest.mark.timeout(900)  # builds (~40 s, network) only when `make test` has not
def test_real_base_has_what_e2b_base_has(real_base: Path, tmp_path: Path) -> None:
    base = real_base
    for tool in ("bash", "python3", "python", "pip", "curl", "git", "sudo", "ps", "id"):
        assert (base / "usr" / "bin" / tool).exists(), tool
    assert check_python(base) == ""
    checks = {
        "getent passwd user": "user:x:1000:1000::/home/user:/bin/bash",
        "id -nG user": "user sudo",
        "su user -c 'sudo -n id -u'": "0",
        "python -c 'import pip, venv, ssl; print(1)'": "1",
        "ls -A /home/user | tr '\\n' ' '": ".bash_logout .bashrc .profile",
    }
    for command, expected in checks.items():
        assert _in_image(base, tmp_path / "scratch", command) == expected, command

    home = (base / "home" / "user").stat()
    assert (home.st_uid, home.st_gid) == (1000, 1000)
    assert sorted(p.name for p in (base / "home" / "user").iterdir()) == [
        ".bash_logout",
        ".bashrc",
        ".profile",
    ]
    sudoers = base / "etc" / "sudoers.d" / "user"
    assert sudoers.read_text() == "user ALL=(ALL:ALL) NOPASSWD: ALL\n"
    assert stat.S_IMODE(sudoers.stat().st_mode) == 0o440 and sudoers.stat().st_uid == 0
    sudo = (base / "usr" / "bin" / "sudo").stat()
    assert sudo.st_uid == 0 and sudo.st_mode & stat.S_ISUID
    # Nothing of the host: its hostname and resolver are not baked in.
    assert (base / "etc" / "hostname").read_text() == "sandbox\n"
    assert (base / "etc" / "resolv.conf").read_text() == ""
