"""Build each matrix release's environment from its committed lock, once.

A Python release gets a venv (`python -m venv --without-pip`, filled by this interpreter's pip
with `--require-hashes --no-deps`: the lock is the whole, hash-checked dependency set); a JS
release gets an npm prefix filled by `npm ci`, which installs exactly package-lock.json. Each
environment records the digest of what it was built from (its lock files and, for a venv, the
base interpreter), so a re-run with unchanged locks installs nothing. A per-environment file
lock keeps two test runs from building the same environment at once.

`python -m sdk_matrix.installing [NAME ...]` (run from tests/, as `make sdk-matrix` does)
installs the named releases, or all, and prints progress.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from sdk_matrix.releases import CACHE_DIR, REPO_ROOT, SdkRelease, by_name

# The file in each environment naming the digest it was built from.
STAMP_NAME = ".lock-sha256"
# Installs wait on the network as much as on the CPU: three at once were fastest on 2 cores
# (seven at once slower than four).
PARALLEL_INSTALLS = 3
INSTALL_TIMEOUT_S = 300.0


class InstallError(RuntimeError):
    """An environment could not be built; the message names the release and the output."""


@dataclass(frozen=True)
class Environment:
    """A built environment of one release, and how to run a scenario in it."""

    release: SdkRelease
    directory: Path
    # True when it was already built from the same locks and nothing was installed.
    cached: bool
    seconds: float

    @property
    def python(self) -> Path:
        return self.directory / "bin" / "python"

    @property
    def node_modules(self) -> Path:
        return self.directory / "node_modules"

    def scenario_argv(self) -> list[str]:
        if self.release.language == "python":
            return [str(self.python), str(self.release.scenario)]
        node = shutil.which("node")
        if node is None:
            raise InstallError("node is not on PATH (the JS releases need it)")
        return [node, str(self.release.scenario)]

    def scenario_env(
        self, base: Mapping[str, str], gateway_env: Mapping[str, str]
    ) -> dict[str, str]:
        """Only what a user's shell would pass (PATH, HOME, locale) plus the gateway's E2B_*:
        nothing of the test runner (PYTHONPATH, E2B_DEBUG, a venv) leaks into the SDK."""
        env = {name: base[name] for name in ("PATH", "HOME", "LANG", "TMPDIR") if name in base}
        env.update(gateway_env)
        if self.release.language == "js":
            env["NODE_PATH"] = str(self.node_modules)
        return env


def lock_digest(release: SdkRelease) -> str:
    """sha256 over the release's lock files and, for a venv, the interpreter it is built on."""
    digest = hashlib.sha256()
    for path in release.lock_files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    if release.language == "python":
        digest.update(f"{sys.base_prefix}\0{sys.version}".encode())
    return digest.hexdigest()


def is_current(directory: Path, digest: str) -> bool:
    stamp = directory / STAMP_NAME
    return stamp.is_file() and stamp.read_text().strip() == digest


def install(release: SdkRelease, cache_dir: Path = CACHE_DIR) -> Environment:
    """The release's environment under `cache_dir`, built from scratch unless current."""
    started = time.monotonic()
    missing = [str(path) for path in release.lock_files if not path.is_file()]
    if missing:
        raise InstallError(
            f"{release.name}: missing lock files {missing}: run make sdk-matrix-lock"
        )
    directory = cache_dir / release.name
    digest = lock_digest(release)
    with _exclusive(cache_dir / f"{release.name}.lock"):
        cached = is_current(directory, digest)
        if not cached:
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir(parents=True)
            if release.language == "python":
                _install_python(release, directory)
            else:
                _install_js(release, directory)
            # Written last: an interrupted install leaves no stamp and is redone next time.
            (directory / STAMP_NAME).write_text(digest + "\n")
    return Environment(release, directory, cached, time.monotonic() - started)


def install_all(
    releases: tuple[SdkRelease, ...],
    cache_dir: Path = CACHE_DIR,
    report: Callable[[str], None] = print,
) -> dict[str, Environment]:
    """Every release's environment, several installs at once. `report` gets a line as each
    install starts and ends (nothing for an environment that is current) and one summary.
    Raises the first release's InstallError after all have finished."""
    started = time.monotonic()
    lock = threading.Lock()
    installed: list[str] = []
    stale = [r for r in releases if not is_current(cache_dir / r.name, _digest_or_empty(r))]

    def say(line: str) -> None:
        with lock:
            report(f"sdk-matrix: {line}")

    def one(release: SdkRelease) -> Environment:
        if release in stale:
            say(f"{release.name}: installing from {_shown(release.lock_files[-1])}")
        try:
            environment = install(release, cache_dir)
        except InstallError:
            say(f"{release.name}: FAILED")
            raise
        if not environment.cached:
            with lock:
                installed.append(release.name)
                done = f"{len(installed)}/{len(stale)}"
            say(f"{release.name}: installed in {environment.seconds:.1f} s ({done})")
        return environment

    workers = max(1, min(PARALLEL_INSTALLS, len(releases)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sdk-matrix") as pool:
        futures = {release.name: pool.submit(one, release) for release in releases}
    environments = {name: future.result() for name, future in futures.items()}
    say(
        f"{len(environments)} environments ready in {time.monotonic() - started:.1f} s "
        f"({len(installed)} installed, {len(environments) - len(installed)} current)"
    )
    return environments


def _install_python(release: SdkRelease, directory: Path) -> None:
    (lock,) = release.lock_files
    _run(release, [sys.executable, "-m", "venv", "--without-pip", str(directory)])
    # This interpreter's pip installs into the venv (`--python`): no pip inside each venv.
    _run(
        release,
        [
            sys.executable, "-m", "pip", "--python", str(directory / "bin" / "python"),
            "install", "--quiet", "--no-input", "--require-hashes", "--no-deps",
            "--only-binary", ":all:", "--requirement", str(lock),
        ],
    )  # fmt: skip


def _install_js(release: SdkRelease, directory: Path) -> None:
    for path in release.lock_files:
        shutil.copy(path, directory / path.name)
    npm = shutil.which("npm")
    if npm is None:
        raise InstallError(f"{release.name}: npm is not on PATH")
    _run(
        release,
        [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel", "error"],
        cwd=directory,
    )


def _run(release: SdkRelease, argv: list[str], cwd: Path | None = None) -> None:
    try:
        result = subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise InstallError(
            f"{release.name}: {argv[:4]} took over {INSTALL_TIMEOUT_S:g} s"
        ) from error
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()[-3000:]
        raise InstallError(
            f"{release.name}: {' '.join(argv)} exited {result.returncode}:\n{output}"
        )


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _digest_or_empty(release: SdkRelease) -> str:
    try:
        return lock_digest(release)
    except OSError:
        return ""


def _shown(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.relative_to(REPO_ROOT))
    return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "names", nargs="*", help="release names, e.g. python-e2b-2.7.0 (default: all)"
    )
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR, help="where environments live")
    args = parser.parse_args(argv)
    try:
        install_all(
            by_name(args.names), args.cache_dir, report=lambda line: print(line, flush=True)
        )
    except (InstallError, ValueError) as error:
        print(f"sdk-matrix: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
