"""`agentcube-e2b interpreter`: flags (each also AGENTCUBE_E2B_INTERPRETER_<FLAG>) ->
InterpreterSettings -> `server.run`.

Imports stay lean here: jupyter_client, zmq and uvicorn load only in `run`.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

from extproc.core.daemon_auth import add_auth_flags, auth_settings
from extproc.core.flags import EnvDefaults, listen_address, usage_error
from extproc.core.logs import add_log_flags, log_options, setup_logging
from extproc.interpreter.settings import (
    DEFAULT_CWD,
    DEFAULT_ENVD_URL,
    DEFAULT_PORT,
    InterpreterSettings,
)

ENV = EnvDefaults("AGENTCUBE_E2B_INTERPRETER_")


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen",
        default=ENV.text("LISTEN") or f"0.0.0.0:{DEFAULT_PORT}",
        metavar="HOST:PORT",
        help=f"address to serve on (default 0.0.0.0:{DEFAULT_PORT}, the SDK's port)",
    )
    parser.add_argument(
        "--envd-url",
        default=ENV.text("ENVD_URL") or DEFAULT_ENVD_URL,
        help=f"envd here, for the sandbox's env vars ('' to skip; default {DEFAULT_ENVD_URL})",
    )
    add_auth_flags(
        parser,
        ENV,
        key_help="PEM RSA public key of the gateway (RS256 JWTs)",
        access_help="E2B's X-Access-Token; when set, /execute requires it (a secure sandbox)",
    )
    parser.add_argument(
        "--binding-file",
        default=ENV.text("BINDING_FILE"),
        metavar="FILE",
        help="picod's binding.json (in its --state-dir): without --sandbox-id, serve the "
        "sandbox picod's /init binds, and nothing but /health before that",
    )
    parser.add_argument(
        "--cwd",
        default=ENV.text("CWD") or str(DEFAULT_CWD),
        help=f"working directory of new contexts (default {DEFAULT_CWD})",
    )
    parser.add_argument(
        "--execution-timeout",
        default=ENV.text("EXECUTION_TIMEOUT") or "0",
        metavar="SECONDS",
        help="interrupt an execution after this long (default 0: only the client's timeout)",
    )
    parser.add_argument(
        "--kernel-python",
        default=ENV.text("KERNEL_PYTHON") or sys.executable,
        metavar="EXE",
        help="the Python that runs the Python and Bash kernels (default: this one)",
    )
    parser.add_argument(
        "--kernel-pythonpath",
        default=ENV.text("KERNEL_PYTHONPATH"),
        metavar="PATHS",
        help="the kernels' PYTHONPATH ('' for none; default: this process's)",
    )
    parser.add_argument(
        "--preload",
        action="store_true",
        default=ENV.flag("PRELOAD"),
        help="import numpy, pandas and matplotlib.pyplot in each Python kernel at its start",
    )
    defaults = InterpreterSettings()
    for flag, default, help_text in (
        (
            "keepalive-interval",
            defaults.keepalive_interval,
            "seconds of silence before a keepalive line",
        ),
        ("max-output-bytes", defaults.max_output_bytes, "stdout/stderr bytes per execution, each"),
        ("max-body-bytes", defaults.max_body_bytes, "largest request body"),
        ("kernel-start-timeout", defaults.kernel_start_timeout, "seconds a kernel gets to start"),
        ("interrupt-grace", defaults.interrupt_grace, "seconds to stop after an interrupt"),
    ):
        parser.add_argument(
            f"--{flag}",
            default=ENV.text(flag.upper().replace("-", "_")) or str(default),
            metavar="N",
            help=f"{help_text} (default {default})",
        )
    add_log_flags(parser, ENV)
    parser.set_defaults(run=run)


def _number(args: argparse.Namespace, flag: str, *, integer: bool = False) -> float:
    text = str(getattr(args, flag.replace("-", "_")))
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        value = -1
    if not value >= 0:
        kind = "an integer" if integer else "a number"
        raise ValueError(f"--{flag}: expected {kind} >= 0, got {text!r}")
    return value


def settings_from_args(args: argparse.Namespace) -> InterpreterSettings:
    """Build settings or raise ValueError naming the flag and what was expected."""
    host, port = listen_address(str(args.listen))
    auth = auth_settings(args)
    if auth.jwt_public_key and not auth.sandbox_id and not args.binding_file:
        # It could never be bound, so it would refuse everything: say so now.
        raise ValueError(
            "--jwt-public-key without --sandbox-id: pass --binding-file (picod's binding.json) "
            "to learn the sandbox from picod's /init, or --sandbox-id"
        )
    cwd = Path(args.cwd)
    if not cwd.is_dir():
        raise ValueError(f"--cwd: {args.cwd!r} is not an existing directory")
    return InterpreterSettings(
        host=host,
        port=port,
        envd_url=args.envd_url or None,
        **asdict(auth),
        binding_file=Path(args.binding_file) if args.binding_file else None,
        cwd=cwd.resolve(),
        execution_timeout=_number(args, "execution-timeout"),
        keepalive_interval=_number(args, "keepalive-interval") or 5.0,
        max_output_bytes=int(_number(args, "max-output-bytes", integer=True)),
        max_body_bytes=int(_number(args, "max-body-bytes", integer=True)),
        kernel_start_timeout=_number(args, "kernel-start-timeout"),
        interrupt_grace=_number(args, "interrupt-grace"),
        kernel_python=str(args.kernel_python),
        kernel_pythonpath=args.kernel_pythonpath,
        preload=bool(args.preload),
    )


def run(args: argparse.Namespace) -> int:
    try:
        log_format, log_level = log_options(args)
        fields = {"sandbox_id": args.sandbox_id} if args.sandbox_id else None
        setup_logging("interpreter", log_format, log_level, fields=fields)
        settings = settings_from_args(args)
    except ValueError as e:
        return usage_error("interpreter", f"error: {e}")
    import uvloop

    from extproc.interpreter.server import run as serve

    uvloop.run(serve(settings))
    return 0
