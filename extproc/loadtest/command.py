"""`agentcube-e2b loadtest`: load a running gateway through the E2B SDK's own settings and
report what its Envoy saw.

Every option is a flag and an `AGENTCUBE_E2B_LOADTEST_*` environment variable (the flag
wins); the gateway itself is found as the SDK finds it, from `E2B_API_KEY`, `E2B_DOMAIN`,
`E2B_API_URL` and `E2B_SANDBOX_URL`. Any failure to start or finish is one line on stderr
and exit status 1 (2 for a bad flag), never a traceback; a run cut short by Ctrl-C still
reports, and exits 130.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from extproc.core.flags import EnvDefaults, grpc_address, integer_arg, number_arg, usage_error
from extproc.loadtest.settings import (
    DATA_PLANE,
    ENVD_REQUESTS,
    SCENARIOS,
    DataPlaneSettings,
    LifecycleSettings,
    LoadtestError,
    LoadtestSettings,
)

ENV = EnvDefaults("AGENTCUBE_E2B_LOADTEST_")
# `up`'s variables: the loadtest finds `up`'s admin socket in the same state directory
UP_ENV = EnvDefaults("AGENTCUBE_E2B_UP_")
_PROG = "agentcube-e2b loadtest"
_KUBERNETES_HINT = (
    "(is `up` running with this --state-dir? For Kubernetes: `kubectl -n agentcube-system "
    "port-forward deploy/agentcube-e2b-edge 9901` and --admin 127.0.0.1:9901)"
)


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scenario",
        choices=SCENARIOS,
        default=ENV.text("SCENARIO", SCENARIOS[0]),
        help="lifecycle: SDK clients looping create, commands.run, files write/read, kill; "
        "data-plane: small envd requests at a fixed rate against sandboxes made first "
        f"(env {ENV.var('SCENARIO')}; default %(default)s)",
    )
    ENV.add(parser, "--duration", "30", "seconds of load", metavar="SECONDS")
    ENV.add(parser, "--clients", "4", "lifecycle: concurrent SDK clients", metavar="N")
    ENV.add(parser, "--rate", "500", "data-plane: envd requests per second", metavar="R")
    ENV.add(parser, "--sandboxes", "4", "data-plane: sandboxes the requests go to", metavar="M")
    ENV.add(parser, "--connections", "16", "data-plane: HTTP/1.1 connections", metavar="C")
    parser.add_argument(
        "--request",
        choices=ENVD_REQUESTS,
        default=ENV.text("REQUEST", ENVD_REQUESTS[0]),
        help="data-plane: the envd request, filesystem.Stat of / (Connect, authenticated by "
        f"picod) or GET /health (env {ENV.var('REQUEST')}; default %(default)s)",
    )
    ENV.add(parser, "--template", "base", "template of every sandbox")
    parser.add_argument(
        "--admin",
        action="append",
        default=None,
        metavar="unix:PATH|HOST:PORT",
        help="the gateway's Envoy admin; repeat for several Envoy replicas, whose stats are "
        f"summed (env {ENV.var('ADMIN')}, comma-separated; default "
        "unix:STATE-DIR/run/envoy-admin.sock, where `up` puts it)",
    )
    parser.add_argument(
        "--state-dir",
        default=ENV.text("STATE_DIR") or UP_ENV.text("STATE_DIR", "state"),
        metavar="DIR",
        help=f"`up`'s state directory, to find its admin socket (env {ENV.var('STATE_DIR')} or "
        f"{UP_ENV.var('STATE_DIR')}; default ./%(default)s)",
    )
    ENV.add(parser, "--stat-prefix", "e2b", "stat_prefix of the gateway's HTTP connection manager")
    ENV.add(
        parser,
        "--histogram-wait",
        "6",
        "seconds to wait for Envoy's histograms to take in the last requests (at once with the "
        "gateway's bootstrap, which flushes on admin reads; else up to Envoy's flush interval, "
        "5 s by default)",
        metavar="SECONDS",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=ENV.text("JSON"),
        metavar="PATH",
        help=f"also write the report here as JSON (env {ENV.var('JSON')})",
    )
    parser.set_defaults(run=run)


def settings_from(args: argparse.Namespace) -> LoadtestSettings:
    """ValueError naming the flag when one is wrong."""
    admin_texts: list[str] = args.admin or [
        part for part in (ENV.text("ADMIN") or "").split(",") if part
    ]
    if not admin_texts:
        state_dir = Path(args.state_dir).absolute()
        admin_texts = [f"unix:{state_dir / 'run' / 'envoy-admin.sock'}"]
    # the same two forms as a gRPC address; the check names the flag
    admins = tuple(grpc_address(text, "--admin") for text in admin_texts)
    if args.scenario not in SCENARIOS:  # reachable through the environment variable
        raise ValueError(f"--scenario: expected one of {', '.join(SCENARIOS)}")
    if args.request not in ENVD_REQUESTS:
        raise ValueError(f"--request: expected one of {', '.join(ENVD_REQUESTS)}")
    duration = number_arg(args, "duration", 1)
    data_plane = DataPlaneSettings(
        rate=number_arg(args, "rate", 1),
        sandboxes=integer_arg(args, "sandboxes", 1),
        connections=integer_arg(args, "connections", 1),
        request=args.request,
    )
    # long enough for the run and the stats waits around it; short enough that an
    # interrupted run's sandboxes do not linger
    timeout = int(duration) + 120 if args.scenario == DATA_PLANE else 120
    return LoadtestSettings(
        scenario=args.scenario,
        duration_s=duration,
        admins=admins,
        template=args.template,
        sandbox_timeout_s=timeout,
        stat_prefix=args.stat_prefix,
        histogram_wait_s=number_arg(args, "histogram_wait", 0),
        json_path=Path(args.json) if args.json else None,
        lifecycle=LifecycleSettings(clients=integer_arg(args, "clients", 1)),
        data_plane=data_plane,
    )


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from(args)
    except ValueError as error:
        return usage_error("loadtest", error)
    try:
        from extproc.loadtest.running import run_loadtest  # the E2B SDK: only when used
    except ImportError as error:
        print(
            f"{_PROG}: the E2B SDK is not installed ({error}): "
            "pip install 'agentcube-e2b[loadtest]'",
            file=sys.stderr,
        )
        return 1
    try:
        report, text = run_loadtest(settings)
    except LoadtestError as error:
        message = str(error)
        if not args.admin and not ENV.text("ADMIN") and "Envoy admin at unix:" in message:
            message = f"{message} {_KUBERNETES_HINT}"
        print(f"{_PROG}: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{_PROG}: interrupted", file=sys.stderr)
        return 130
    sys.stdout.write(text)
    if settings.json_path is not None:
        try:
            settings.json_path.write_text(json.dumps(report, indent=2) + "\n")
        except OSError as error:
            print(f"{_PROG}: cannot write --json {settings.json_path}: {error}", file=sys.stderr)
            return 1
    # a report of a run cut short by Ctrl-C is written, but not passed off as a whole run
    return 130 if report["interrupted"] else 0
