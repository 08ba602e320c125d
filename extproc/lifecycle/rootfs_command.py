"""`agentcube-e2b rootfs build`: build (or reuse) the local sandboxes' base root filesystem.

Progress goes to stderr as it happens (the first build takes about 40 s); the path of the
ready tree is the one line on stdout, for scripts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from extproc.core.errors import DomainError
from extproc.core.flags import EnvDefaults

ENV = EnvDefaults("AGENTCUBE_E2B_ROOTFS_")
DEFAULT_CACHE_DIR = "state/rootfs"


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="rootfs_command", metavar="ACTION", required=True)
    build = sub.add_parser(
        "build",
        help="build the base root filesystem unless the cache has it; print its path",
        description="build the base root filesystem unless the cache has it; print its path",
    )
    ENV.add(build, "--cache-dir", DEFAULT_CACHE_DIR, "directory of built bases", metavar="DIR")
    build.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from extproc.lifecycle.rootfs import check_python, ensure_base

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        path = ensure_base(Path(args.cache_dir).absolute(), progress)
    except DomainError as error:
        print(f"agentcube-e2b rootfs build: {error.message}", file=sys.stderr)
        return 1
    except OSError as error:  # the cache directory is not writable, the disk is full, ...
        print(f"agentcube-e2b rootfs build: {error}", file=sys.stderr)
        return 1
    if reason := check_python(path):
        print(f"warning: {reason}", file=sys.stderr)
    print(path)
    return 0
