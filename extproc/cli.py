"""The `agentcube-e2b` command.

Each surface registers its own subcommand from `extproc.<surface>.command`; they are
imported only when that subcommand runs, so `agentcube-e2b picod` inside a sandbox does not
pay for gRPC or Envoy imports it never uses.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand -> (module that registers it, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "picod": ("extproc.picod.command", "the envd-compatible daemon inside a sandbox"),
    "lifecycle": ("extproc.lifecycle.command", "the lifecycle gRPC service (sandboxes, templates)"),
    "edge": ("extproc.edge.command", "the Envoy ext_authz/ext_proc server"),
    "keys": ("extproc.edge.keys_command", "create, list and revoke E2B API keys"),
    "envoy-config": ("extproc.edge.envoy_command", "write the Envoy bootstrap YAML"),
    "interpreter": (
        "extproc.interpreter.command",
        "the code interpreter server inside a sandbox (port 49999)",
    ),
    "rootfs": (
        "extproc.lifecycle.rootfs_command",
        "build the base root filesystem of local sandboxes",
    ),
    "picod-bundle": (
        "extproc.picod_bundle",
        "write picod as a self-contained directory that runs in any Linux image",
    ),
    "up": ("extproc.up", "run the whole gateway on this machine with local sandboxes"),
    "loadtest": (
        "extproc.loadtest.command",
        "load a running gateway with E2B clients and report from Envoy's admin stats",
    ),
}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="agentcube-e2b", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    wanted = args[0] if args and args[0] in COMMANDS else None
    for name, (module_name, help_text) in COMMANDS.items():
        if name == wanted:
            module = importlib.import_module(module_name)
            module.register(subparsers.add_parser(name, help=help_text, description=help_text))
        else:
            subparsers.add_parser(name, help=help_text, add_help=False)
    namespace = parser.parse_args(args)
    if wanted is None:
        parser.error(f"unknown command {namespace.command!r}")
    code: int = namespace.run(namespace)
    return code


if __name__ == "__main__":
    sys.exit(main())
