"""Write the matrix's committed locks from releases.py (`make sdk-matrix-lock`).

Python: `pip-compile --generate-hashes` (pip-tools, installed into its own venv in the cache,
never into the project's) writes locks/<name>.txt, keeping the pins already there unless
`--upgrade`. JS: js/<version>/package.json names the one release and `npm install
--package-lock-only` writes its package-lock.json. Run it after editing RELEASES and commit
what changed; the tests install only from these files.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from sdk_matrix.releases import CACHE_DIR, LOCKS_DIR, SdkRelease, by_name

PIP_TOOLS = "pip-tools==7.6.2"


def package_json(release: SdkRelease) -> str:
    body = {
        "name": f"agentcube-e2b-sdk-matrix-{release.package}-{release.version}",
        "private": True,
        "description": "One JS SDK release of the SDK version matrix (tests/sdk_matrix).",
        "dependencies": {release.package: release.version},
    }
    return json.dumps(body, indent=2) + "\n"


def lock_python(release: SdkRelease, pip_compile: Path, work_dir: Path, upgrade: bool) -> None:
    # pip-compile annotates pins with the input's path as given: a bare name keeps it stable.
    source = work_dir / f"{release.name}.in"
    source.write_text("".join(f"{line}\n" for line in release.requirements))
    (lock,) = release.lock_files
    argv = [
        str(pip_compile), "--quiet", "--generate-hashes", "--allow-unsafe", "--strip-extras",
        "--no-emit-index-url", "--no-emit-find-links", "--output-file", str(lock), source.name,
    ]  # fmt: skip
    if upgrade:
        argv.append("--upgrade")
    # The lock's header names the command that wrote it (pip-tools reads this variable).
    env = {**os.environ, "CUSTOM_COMPILE_COMMAND": "make sdk-matrix-lock"}
    subprocess.run(argv, cwd=work_dir, env=env, check=True)


def lock_js(release: SdkRelease, upgrade: bool) -> None:
    directory = release.js_package_dir
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "package.json").write_text(package_json(release))
    if upgrade:
        (directory / "package-lock.json").unlink(missing_ok=True)
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("npm is not on PATH")
    subprocess.run(
        [npm, "install", "--package-lock-only", "--no-audit", "--no-fund", "--ignore-scripts"],
        cwd=directory,
        check=True,
    )


def pip_compile_executable(cache_dir: Path) -> Path:
    tools = cache_dir / "_pip-tools"
    executable = tools / "bin" / "pip-compile"
    if not executable.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(tools)], check=True)
        subprocess.run(
            [str(tools / "bin" / "python"), "-m", "pip", "install", "--quiet", PIP_TOOLS],
            check=True,
        )
    return executable


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="write the SDK matrix's locks")
    parser.add_argument("names", nargs="*", help="release names (default: all)")
    parser.add_argument("--upgrade", action="store_true", help="re-resolve every dependency")
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR)
    args = parser.parse_args(argv)
    releases = by_name(args.names)
    LOCKS_DIR.mkdir(parents=True, exist_ok=True)
    work_dir = args.cache_dir / "_lock-inputs"
    work_dir.mkdir(parents=True, exist_ok=True)
    pip_compile = None
    for release in releases:
        print(f"sdk-matrix-lock: {release.name}", flush=True)
        if release.language == "python":
            pip_compile = pip_compile or pip_compile_executable(args.cache_dir)
            lock_python(release, pip_compile, work_dir, args.upgrade)
        else:
            lock_js(release, args.upgrade)
    return 0


if __name__ == "__main__":
    sys.exit(main())
