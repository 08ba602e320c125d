"""`agentcube-e2b picod`: flags (each also AGENTCUBE_E2B_PICOD_<FLAG>) -> PicodSettings.

Imports stay lean here (the server, Connect and uvicorn load only in `run`): picod is
started once per sandbox, and its start-to-serving time is on the sandbox create path.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
from dataclasses import asdict
from pathlib import Path

from extproc.core.daemon_auth import add_auth_flags, auth_settings
from extproc.core.flags import (
    EnvDefaults,
    integer_arg,
    listen_address,
    number_arg,
    usage_error,
)
from extproc.core.logs import add_log_flags, log_options, setup_logging
from extproc.picod.binding import Binding
from extproc.picod.settings import DEFAULT_HOME, DEFAULT_USER, PicodSettings

ENV = EnvDefaults("AGENTCUBE_E2B_PICOD_")
# AgentCube's PicoD takes the gateway's public key PEM itself from this variable.
AGENTCUBE_KEY_ENV = "PICOD_AUTH_PUBLIC_KEY"


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen",
        default=ENV.text("LISTEN") or "0.0.0.0:49983",
        metavar="HOST:PORT",
        help="address to serve on (default 0.0.0.0:49983, envd's port)",
    )
    add_auth_flags(
        parser,
        ENV,
        key_help=f"PEM RSA public key of the gateway (or the PEM itself in ${AGENTCUBE_KEY_ENV})",
        access_help="envd's X-Access-Token",
    )
    parser.add_argument(
        "--state-dir",
        default=ENV.text("STATE_DIR"),
        metavar="DIR",
        help="keep the binding /init makes here (0600), to survive a restart (default: none)",
    )
    parser.add_argument("--user", default=ENV.text("USER") or DEFAULT_USER, help="default user")
    parser.add_argument(
        "--home", default=ENV.text("HOME") or str(DEFAULT_HOME), help="the default user's home"
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[line for line in (ENV.text("ENV") or "").splitlines() if line],
        metavar="KEY=VALUE",
        help="sandbox env var for every process (repeatable; env: one per line)",
    )
    parser.add_argument(
        "--metrics-interval",
        default=ENV.text("METRICS_INTERVAL") or "5.0",
        metavar="SECONDS",
        help="seconds between the samples kept for GET /metrics?start=&end= (0: none kept; "
        "default 5.0)",
    )
    parser.add_argument(
        "--metrics-max-samples",
        default=ENV.text("METRICS_MAX_SAMPLES") or "720",
        metavar="N",
        help="most metric samples kept, the oldest dropped first (default 720)",
    )
    parser.add_argument(
        "--ready-fd",
        default=ENV.text("READY_FD"),
        metavar="FD",
        help="write one byte to this inherited fd, and close it, once serving (default: none)",
    )
    add_log_flags(parser, ENV)
    parser.set_defaults(run=run, parser=parser)


def settings_from_args(args: argparse.Namespace) -> PicodSettings:
    """Build settings or raise ValueError naming the flag and what was expected."""
    host, port = listen_address(str(args.listen))
    auth = auth_settings(args, os.environ.get(AGENTCUBE_KEY_ENV))
    env_vars = _env_json(ENV.text("ENV_JSON"))
    for item in args.env:
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise ValueError(f"--env: expected KEY=VALUE, got {item!r}")
        env_vars[name] = value
    return PicodSettings(
        host=host,
        port=port,
        **asdict(auth),
        default_user=args.user,
        home=Path(args.home),
        env_vars=env_vars,
        state_dir=Path(args.state_dir) if args.state_dir else None,
        metrics_interval_s=_metrics_interval(args),
        metrics_max_samples=integer_arg(args, "metrics_max_samples", 1),
        ready_fd=integer_arg(args, "ready_fd", 0) if args.ready_fd else None,
    )


def _metrics_interval(args: argparse.Namespace) -> float:
    seconds = number_arg(args, "metrics_interval", 0.0)
    if not math.isfinite(seconds):
        raise ValueError(f"--metrics-interval: expected a finite number, got {seconds}")
    return seconds


def _env_json(raw: str | None) -> dict[str, str]:
    """The sandbox's env vars as one JSON object: how the lifecycle service passes them, so
    that values may hold newlines and nothing of them shows in argv."""
    if not raw:
        return {}
    try:
        loaded = json.loads(raw)
    except ValueError as e:
        raise ValueError(f"{ENV.var('ENV_JSON')}: not JSON: {e}") from e
    if not isinstance(loaded, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in loaded.items()
    ):
        raise ValueError(f"{ENV.var('ENV_JSON')}: expected an object of strings")
    return loaded


def run(args: argparse.Namespace) -> int:
    try:
        log_format, log_level = log_options(args)
    except ValueError as e:
        return usage_error("picod", f"error: {e}")
    fields = {"sandbox_id": args.sandbox_id} if args.sandbox_id else None
    setup_logging("picod", log_format, log_level, fields=fields)
    try:
        settings = settings_from_args(args)
        settings.home.mkdir(parents=True, exist_ok=True)
        binding = Binding.load(settings.sandbox_id, settings.access_token, settings.state_dir)
    except (ValueError, OSError) as e:
        return usage_error("picod", f"error: {e}")
    # Off while the server's imports build a heap that only grows; the server freezes
    # that heap and turns collection back on once it serves (see server.py).
    gc.disable()
    from extproc.picod.server import run as serve

    return serve(settings, binding)
