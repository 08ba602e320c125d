"""`agentcube-e2b edge`: flags (each also AGENTCUBE_E2B_EDGE_<FLAG>) -> EdgeSettings -> run.

gRPC, Envoy stubs and uvloop are imported only in `run`, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path

from extproc.core.api_keys import validate_namespace
from extproc.core.caller_token import read_token_file
from extproc.core.errors import InvalidArgument
from extproc.core.flags import EnvDefaults, grpc_address, number_arg
from extproc.edge.settings import (
    DirectorySettings,
    EdgeSettings,
    KeyStoreSettings,
    KubernetesSettings,
    TokenSettings,
)

ENV = EnvDefaults("AGENTCUBE_E2B_EDGE_")


def register(parser: argparse.ArgumentParser) -> None:
    directory, tokens = DirectorySettings(), TokenSettings(identity_directory=Path())
    add = parser.add_argument
    add(
        "--listen",
        default=ENV.text("LISTEN", "127.0.0.1:9001"),
        metavar="unix:PATH|HOST:PORT",
        help="gRPC address for ext_authz, ext_proc and health; a unix socket is made 0600 "
        "(default 127.0.0.1:9001)",
    )
    add(
        "--lifecycle",
        default=ENV.text("LIFECYCLE", directory.lifecycle_target),
        metavar="unix:PATH|HOST:PORT",
        help=f"lifecycle gRPC address (default {directory.lifecycle_target})",
    )
    add(
        "--lifecycle-token-file",
        default=ENV.text("LIFECYCLE_TOKEN_FILE", None),
        metavar="FILE",
        help="0600 file with the lifecycle service's caller token, sent on every lifecycle "
        "call (default: none)",
    )
    add(
        "--state-dir",
        default=ENV.text("STATE_DIR", "./state"),
        metavar="DIR",
        help="state directory: keys/ and identity/ (default ./state)",
    )
    add(
        "--domain",
        default=ENV.text("DOMAIN", "e2b.localhost"),
        metavar="DOMAIN",
        help="sandbox domain: hosts {port}-{id}.DOMAIN (default e2b.localhost)",
    )
    add(
        "--metrics-listen",
        default=ENV.text("METRICS_LISTEN", "127.0.0.1:9091"),
        metavar="unix:PATH|HOST:PORT",
        help="Prometheus /metrics address, '' to disable; a unix socket is made 0600 "
        "(default 127.0.0.1:9091)",
    )
    add(
        "--grace",
        default=ENV.text("GRACE", 5.0),
        metavar="SECONDS",
        help="seconds in-flight RPCs get on SIGTERM (default 5)",
    )
    add(
        "--keys-poll-interval",
        default=ENV.text("KEYS_POLL_INTERVAL", 0.25),
        metavar="SECONDS",
        help="seconds between checks of the key files (default 0.25)",
    )
    add(
        "--lookup-timeout",
        default=ENV.text("LOOKUP_TIMEOUT", directory.lookup_timeout_s),
        metavar="SECONDS",
        help="deadline of the GetSandbox read on a directory miss "
        f"(default {directory.lookup_timeout_s})",
    )
    add(
        "--negative-ttl",
        default=ENV.text("NEGATIVE_TTL", directory.negative_ttl_s),
        metavar="SECONDS",
        help="seconds an unknown sandbox id stays cached as missing "
        f"(default {directory.negative_ttl_s})",
    )
    add(
        "--jwt-lifetime",
        default=ENV.text("JWT_LIFETIME", tokens.lifetime_s),
        metavar="SECONDS",
        help=f"picod JWT lifetime (default {tokens.lifetime_s})",
    )
    add(
        "--jwt-refresh-margin",
        default=ENV.text("JWT_REFRESH_MARGIN", tokens.refresh_margin_s),
        metavar="SECONDS",
        help=f"re-sign a cached JWT when fewer seconds remain (default {tokens.refresh_margin_s})",
    )
    kube = KubernetesSettings()
    add(
        "--keys-source",
        default=ENV.text("KEYS_SOURCE", kube.keys_source),
        choices=("files", "kubernetes"),
        help="API keys from <state-dir>/keys files or from Secret e2b-api-keys and ConfigMap "
        f"e2b-api-key-config through informers (default {kube.keys_source})",
    )
    add(
        "--keys-namespace",
        default=ENV.text("KEYS_NAMESPACE", kube.keys.namespace),
        metavar="NAMESPACE",
        help=f"namespace of the two key documents (default {kube.keys.namespace})",
    )
    add(
        "--directory-source",
        default=ENV.text("DIRECTORY_SOURCE", kube.directory_source),
        choices=("lifecycle", "kubernetes"),
        help="routing directory from lifecycle's WatchSandboxes or from Sandbox and Pod "
        f"informers (default {kube.directory_source})",
    )
    add(
        "--kubeconfig",
        default=ENV.text("KUBECONFIG", ""),
        metavar="FILE",
        help="kubeconfig for the Kubernetes mode (default: the pod's service account, "
        "else ~/.kube/config)",
    )
    add(
        "--miss-wait",
        default=ENV.text("MISS_WAIT", kube.miss_wait_s),
        metavar="SECONDS",
        help="Kubernetes directory: seconds a Check for an id not yet running waits for the "
        f"informers (default {kube.miss_wait_s})",
    )
    add(
        "--log-level",
        default=ENV.text("LOG_LEVEL", "INFO"),
        metavar="LEVEL",
        help="logging level (default INFO)",
    )
    parser.set_defaults(run=run, parser=parser)  # fmt: skip


def _address(args: argparse.Namespace, name: str, optional: bool = False) -> str:
    flag = f"--{name.replace('_', '-')}"
    return grpc_address(str(getattr(args, name)), flag, optional=optional)


def settings_from_args(args: argparse.Namespace) -> EdgeSettings:
    """Build settings or raise ValueError naming the flag and what was expected."""
    state_dir = Path(args.state_dir)
    lifetime = int(number_arg(args, "jwt_lifetime", 10))
    margin = int(number_arg(args, "jwt_refresh_margin", 0))
    if margin >= lifetime:
        raise ValueError("--jwt-refresh-margin: must be shorter than --jwt-lifetime")
    domain = str(args.domain).strip(".").lower()
    if not domain:
        raise ValueError("--domain: expected a domain name")
    kube = _kubernetes_settings(args)
    token_file = Path(args.lifecycle_token_file) if args.lifecycle_token_file else None
    if token_file is not None:
        read_token_file(token_file, "--lifecycle-token-file")  # fail now, naming the flag
    return EdgeSettings(
        listen=_address(args, "listen"),
        keys=KeyStoreSettings(
            directory=state_dir / "keys",
            poll_interval_s=number_arg(args, "keys_poll_interval", 0.01),
        ),
        directory=DirectorySettings(
            lifecycle_target=_address(args, "lifecycle"),
            lifecycle_token_file=token_file,
            lookup_timeout_s=number_arg(args, "lookup_timeout", 0.01),
            negative_ttl_s=number_arg(args, "negative_ttl", 0),
        ),
        tokens=TokenSettings(
            identity_directory=state_dir / "identity",
            lifetime_s=lifetime,
            refresh_margin_s=margin,
        ),
        domain=domain,
        metrics_listen=_address(args, "metrics_listen", optional=True),
        shutdown_grace_s=number_arg(args, "grace", 0),
        kubernetes=kube,
    )


def _kubernetes_settings(args: argparse.Namespace) -> KubernetesSettings:
    for dest, allowed in (
        ("keys_source", ("files", "kubernetes")),
        ("directory_source", ("lifecycle", "kubernetes")),
    ):
        if getattr(args, dest) not in allowed:  # reachable through the environment variable
            flag = "--" + dest.replace("_", "-")
            raise ValueError(f"{flag}: expected one of {', '.join(allowed)}")
    namespace = str(args.keys_namespace)
    try:
        validate_namespace(namespace)
    except InvalidArgument as error:
        raise ValueError(f"--keys-namespace: {error.message}") from error
    defaults = KubernetesSettings()
    miss_wait = number_arg(args, "miss_wait", 0)
    if miss_wait >= 0.25:
        raise ValueError("--miss-wait: must stay under Envoy's ext_authz timeout (0.25 s)")
    return KubernetesSettings(
        keys_source=args.keys_source,
        directory_source=args.directory_source,
        kubeconfig=Path(args.kubeconfig) if args.kubeconfig else None,
        keys=replace(defaults.keys, namespace=namespace),
        miss_wait_s=miss_wait,
    )


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
    except ValueError as error:
        args.parser.error(str(error))
    logging.basicConfig(
        level=str(args.log_level).upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    import uvloop

    from extproc.edge.server import run as serve

    uvloop.run(serve(settings))
    return 0
