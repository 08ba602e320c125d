"""`agentcube-e2b envoy-config`: write the Envoy bootstrap for a deployment.

Every option is a flag and an `AGENTCUBE_E2B_ENVOY_*` environment variable (the flag wins).
Without `-o` the YAML goes to stdout. `--fragment` writes the pieces to merge into an Envoy
you already run instead (extproc/envoy_config/fragment.py, docs/envoy.md); `--listen` and
`--admin` are the team's there and do not apply.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from extproc.core.flags import EnvDefaults, usage_error
from extproc.envoy_config.settings import DEFAULT_DOMAIN, EnvoySettings, HostPort

ENV = EnvDefaults("AGENTCUBE_E2B_ENVOY_")


def register(parser: argparse.ArgumentParser) -> None:
    defaults = EnvoySettings()
    ENV.add(parser, "--listen", str(defaults.listen), "public listener IP:PORT")
    ENV.add(parser, "--domain", DEFAULT_DOMAIN, "sandbox domain")
    parser.add_argument(
        "--edge",
        action="append",
        default=None,
        metavar="IP:PORT",
        help=(
            "an edge gRPC endpoint; repeat for several edge processes "
            f"(env {ENV.var('EDGES')}, comma-separated; default {defaults.edges[0]})"
        ),
    )
    ENV.add(parser, "--admin", str(defaults.admin), "admin interface, loopback IP:PORT only")
    parser.add_argument(
        "--fragment",
        action="store_true",
        help="print filters, clusters, virtual hosts and connection manager settings to merge "
        "into an existing Envoy (docs/envoy.md) instead of a whole bootstrap",
    )
    parser.add_argument(
        "-o", "--output", type=Path, default=None, help="write here instead of stdout"
    )
    parser.set_defaults(run=run)


def settings_from(args: argparse.Namespace) -> EnvoySettings:
    edges_text: list[str] = args.edge or [
        part for part in ENV.text("EDGES", str(EnvoySettings().edges[0])).split(",") if part
    ]
    return EnvoySettings(
        listen=HostPort.parse(args.listen),
        admin=HostPort.parse(args.admin),
        domain=args.domain.lower(),
        edges=tuple(HostPort.parse(edge) for edge in edges_text),
    )


def run(args: argparse.Namespace) -> int:
    # imported here: envoy-data-plane takes about a second to import
    from extproc.envoy_config.bootstrap import render_yaml
    from extproc.envoy_config.fragment import render_fragment_yaml

    try:
        settings = settings_from(args)
    except ValueError as error:
        return usage_error("envoy-config", error)
    text = render_fragment_yaml(settings) if args.fragment else render_yaml(settings)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    return 0
