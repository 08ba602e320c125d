"""`agentcube-e2b picod-bundle`: picod as a directory that runs in any Linux image.

E2B injects envd into every template, so any image can be one. Kubernetes mode does the
same with this bundle: an init container copies it into an `emptyDir` and the image's own
container runs picod from there (lifecycle/manifests.py). The image needs nothing, not even
a libc, because the bundle carries the whole runtime:

    lib/ld.so                   the dynamic loader this Python was linked against
    lib/*.so*                   every shared library the interpreter and the extension
                                modules need (what `ldd` resolves them to here)
    bin/python3                 the interpreter binary
    lib/python3.X/              the standard library (tests, IDLE, Tk and the like left out),
                                lib-dynload, and site-packages with picod's packages and
                                `extproc` itself

and is started as `lib/ld.so --library-path lib bin/python3 -I -m extproc.cli picod ...`
(`launcher`). Running the loader directly rather than the binary is what frees it from the
image: the binary's own PT_INTERP would name the image's loader, and `--library-path` is a
setting of that one loader invocation, not an environment variable, so nothing leaks into
the commands picod starts. Python finds its standard library from the path of `bin/python3`
(its `lib/python3.X/os.py` landmark), so no PYTHONHOME is needed either; `-I` makes it
ignore PYTHON* variables the image or the pod sets, and picod builds every child's
environment from nothing (picod/process_spawn.py), so the bundle stays picod's alone.

Which packages: the top-level packages of every module that importing picod's server and
the modules it imports lazily (`_LAZY`) loads into the building process.
"""

from __future__ import annotations

import argparse
import compileall
import importlib
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

import extproc

# What picod imports only when it runs, or when a key is configured.
_LAZY = (
    "extproc.cli", "extproc.picod.command", "extproc.picod.server", "uvloop",
    "uvicorn.protocols.http.httptools_impl", "uvicorn.lifespan.on", "uvicorn.loops.uvloop",
    "jwt", "jwt.algorithms", "cryptography.hazmat.primitives.serialization",
    "cryptography.hazmat.primitives.asymmetric.rsa", "cryptography.hazmat.backends.openssl",
    "asyncinotify", "python_multipart.multipart",
)  # fmt: skip
# Parts of the standard library picod never imports (and the biggest ones).
_STDLIB_LEFT_OUT = {
    "test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "site-packages",
    "pydoc_data", "venv", "__phello__",
}  # fmt: skip
_LIBRARY = re.compile(r"^\s*(?:\S+ => )?(/\S+) \(0x[0-9a-f]+\)$")
LOADER = "lib/ld.so"
PYTHON = "bin/python3"


def launcher(bundle: str) -> list[str]:
    """The argv that runs `python -m extproc.cli` from the bundle at `bundle` (a path in
    the container); picod's own words and flags follow."""
    return [f"{bundle}/{LOADER}", "--library-path", f"{bundle}/lib", f"{bundle}/{PYTHON}",
            "-I", "-m", "extproc.cli"]  # fmt: skip


def _loaded_packages() -> dict[str, Path]:
    """Top-level package or module name -> its path, for every module under a
    site-packages directory that importing picod (and `_LAZY`) loads, and the `.dist-info`
    of their distributions (connectrpc reads its own version from it)."""
    for name in _LAZY:
        importlib.import_module(name)
    roots = [p for p in sys.path if p.endswith("site-packages")]
    found: dict[str, Path] = {}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None) or ""
        for root in roots:
            if path.startswith(root + "/"):
                top = path[len(root) + 1 :].split("/")[0]
                found[top] = Path(root, top)
    # Import hooks of this venv's installers (the editable install's is how it may find
    # extproc, which is copied as itself), not packages picod uses.
    found = {k: v for k, v in found.items() if not k.startswith(("__editable__", "_distutils"))}
    found["extproc"] = Path(extproc.__path__[0])
    owners = metadata.packages_distributions()
    for top in list(found):
        for dist in owners.get(top.removesuffix(".py"), ()):
            info = Path(str(metadata.distribution(dist)._path))  # type: ignore[attr-defined]
            found[info.name] = info
    return found


def _libraries(binaries: list[Path]) -> tuple[Path, set[Path]]:
    """(the loader, every other shared library) `ldd` resolves `binaries` to."""
    loader: Path | None = None
    found: set[Path] = set()
    for binary in binaries:
        out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True)
        for line in out.stdout.splitlines():
            match = _LIBRARY.match(line)
            if not match:
                continue
            path = Path(match.group(1))
            if "=>" in line:
                found.add(path)
            elif binary == binaries[0]:
                loader = path  # the interpreter's PT_INTERP: ldd lists it without "=>"
    if loader is None:
        raise RuntimeError(f"ldd names no dynamic loader for {binaries[0]}")
    return loader, found


def build(out: Path) -> Path:
    """Write the bundle into `out` (which must not exist) from this interpreter and venv."""
    if out.exists():
        raise FileExistsError(f"{out} exists; the bundle is written into a new directory")
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    binary = Path(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    lib = out / "lib"
    target = lib / version
    (out / "bin").mkdir(parents=True)
    shutil.copy2(binary, out / PYTHON)

    def left_out(directory: str, names: list[str]) -> set[str]:
        top = Path(directory) == stdlib
        return {n for n in names if n.startswith("_tkinter") or (top and (
            n in _STDLIB_LEFT_OUT or n.startswith("config-")))}  # fmt: skip

    shutil.copytree(stdlib, target, ignore=left_out)
    site = target / "site-packages"
    site.mkdir()
    for name, path in sorted(_loaded_packages().items()):
        source = path
        if source.is_dir():
            shutil.copytree(source, site / name, ignore=shutil.ignore_patterns("*.pyi"))
        else:
            shutil.copy2(source, site / name)
    extensions = sorted(lib.rglob("*.so"))
    loader, libraries = _libraries([out / PYTHON, *extensions])
    for library in sorted(libraries):
        if not (lib / library.name).exists():
            shutil.copy2(library, lib / library.name)
    shutil.copy2(loader, out / LOADER)
    compileall.compile_dir(site, quiet=1, workers=1)
    return out


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="the directory to write (must not exist)")  # fmt: skip
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        out = build(args.out)
    except (OSError, RuntimeError, subprocess.CalledProcessError) as error:
        print(f"agentcube-e2b picod-bundle: {error}", file=sys.stderr)
        return 1
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"picod bundle in {out} ({size / 2**20:.0f} MiB); run it with: "
          f"{' '.join(launcher(str(out)))} picod")  # fmt: skip
    return 0
