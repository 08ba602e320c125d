"""`agentcube-e2b edge`: flags (each also AGENTCUBE_E2B_EDGE_<FLAG>) -> EdgeSettings -> run.

gRPC, Envoy stubs and uvloop are imported only in `run`, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from extproc.core.caller_token import read_token_file
from extproc.core.errors import DomainError
from extproc.core.flags import (
    EnvDefaults,
    grpc_address,
    namespace_arg,
    number_arg,
    secret_name_arg,
)
from extproc.core.identity import TlsIdentity
from extproc.core.logs import add_log_flags, log_options, setup_logging
from extproc.edge.settings import (
    DirectorySettings,
    EdgeSettings,
    FastPathSettings,
    KeyStoreSettings,
    KubernetesSettings,
    TokenSettings,
)

ENV = EnvDefaults("AGENTCUBE_E2B_EDGE_")
# AgentCube's own variable for its namespace (its router reads it): the identity's default.
AGENTCUBE_NAMESPACE_ENV = "AGENTCUBE_NAMESPACE"
# --lifecycle-tls-dir: the keys of Secret e2b-lifecycle-tls the edge uses, as mounted files.
CA_FILE, CERT_FILE, KEY_FILE = "ca.crt", "client.crt", "client.key"
FILES = (CA_FILE, CERT_FILE, KEY_FILE)


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
    add(
        "--fast-path-routes",
        default=ENV.text("FAST_PATH_ROUTES", ""),
        metavar="FILE",
        help="the fast path: serve Envoy these static routes (a serialized RouteConfiguration, "
        "as `up` writes) over xDS with a route per running sandbox that skips the Check; the "
        "bootstrap must take its routes from the edges (default: off)",
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
        "--namespace",
        default=ENV.text("NAMESPACE", os.environ.get("POD_NAMESPACE") or kube.namespace),
        metavar="NAMESPACE",
        help="Kubernetes mode: our namespace, where the lifecycle service keeps the TLS and "
        f"proof-key Secrets (default $POD_NAMESPACE, else {kube.namespace})",
    )
    add(
        "--identity-namespace",
        default=ENV.text(
            "IDENTITY_NAMESPACE", os.environ.get(AGENTCUBE_NAMESPACE_ENV) or kube.identity_namespace
        ),
        metavar="NAMESPACE",
        help="Kubernetes mode: AgentCube's namespace, where its router keeps the identity "
        f"Secret (default ${AGENTCUBE_NAMESPACE_ENV}, else {kube.identity_namespace})",
    )
    add(
        "--identity-secret",
        default=ENV.text("IDENTITY_SECRET", kube.identity_secret),
        metavar="NAME",
        help="Kubernetes mode: the Secret with the router identity the edge signs picod JWTs "
        f"with, read through the API (default {kube.identity_secret})",
    )
    add(
        "--lifecycle-tls-secret",
        default=ENV.text("LIFECYCLE_TLS_SECRET", kube.lifecycle_tls_secret),
        metavar="NAME",
        help="Kubernetes mode: the Secret (in --namespace) with the edge's client certificate "
        "for mutual TLS to the lifecycle service; '' dials it in plaintext (default "
        f"{kube.lifecycle_tls_secret})",
    )
    add(
        "--lifecycle-tls-dir",
        default=ENV.text("LIFECYCLE_TLS_DIR", None),
        metavar="DIR",
        help=f"mutual TLS to the lifecycle service from files {CA_FILE}, {CERT_FILE} and "
        f"{KEY_FILE} in DIR (a mounted Secret), in any mode; takes precedence over "
        "--lifecycle-tls-secret (default: none)",
    )
    add(
        "--proof-secret",
        default=ENV.text("PROOF_SECRET", kube.proof_secret),
        metavar="NAME",
        help="Kubernetes directory: the Secret (in --namespace) with the key proving which "
        f"Sandboxes the lifecycle service made (default {kube.proof_secret})",
    )
    add(
        "--secret-wait",
        default=ENV.text("SECRET_WAIT", kube.secret_wait_s),
        metavar="SECONDS",
        help="Kubernetes mode: seconds start-up waits for those Secrets to be created "
        f"(default {kube.secret_wait_s:g})",
    )
    add_log_flags(parser, ENV)
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
    routes_file = Path(args.fast_path_routes) if args.fast_path_routes else None
    if routes_file is not None:
        if kube.directory_source == "kubernetes":
            raise ValueError(
                "--fast-path-routes: the fast path needs the lifecycle directory (the "
                "Kubernetes one holds only token digests)"
            )
        if not routes_file.is_file():
            raise ValueError(f"--fast-path-routes: no such file {routes_file}")
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
            lifecycle_tls=_tls_from_directory(args.lifecycle_tls_dir),
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
        fast_path=FastPathSettings(routes_file=routes_file),
    )


def _kubernetes_settings(args: argparse.Namespace) -> KubernetesSettings:
    for dest, allowed in (
        ("keys_source", ("files", "kubernetes")),
        ("directory_source", ("lifecycle", "kubernetes")),
    ):
        if getattr(args, dest) not in allowed:  # reachable through the environment variable
            flag = "--" + dest.replace("_", "-")
            raise ValueError(f"{flag}: expected one of {', '.join(allowed)}")
    namespace = namespace_arg(args, "keys_namespace")
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
        namespace=namespace_arg(args, "namespace"),
        identity_namespace=namespace_arg(args, "identity_namespace"),
        identity_secret=secret_name_arg(args, "identity_secret"),
        lifecycle_tls_secret=secret_name_arg(args, "lifecycle_tls_secret", optional=True),
        proof_secret=secret_name_arg(args, "proof_secret"),
        secret_wait_s=number_arg(args, "secret_wait", 0),
    )


def _tls_from_directory(directory: str | None) -> TlsIdentity | None:
    """`--lifecycle-tls-dir`: the edge's certificate, key and the lifecycle's CA, checked."""
    if not directory:
        return None
    from extproc.k8s.identity import SecretUnavailable
    from extproc.k8s.lifecycle_tls import checked

    try:
        ca, cert, key = ((Path(directory) / name).read_bytes() for name in FILES)
    except OSError as error:
        raise ValueError(f"--lifecycle-tls-dir: {error}") from error
    try:
        return checked(ca, cert, key, directory)
    except SecretUnavailable as error:
        raise ValueError(f"--lifecycle-tls-dir: {error}") from error


_T = TypeVar("_T")
_SECRET_POLL_S = 1.0
_MADE_BY_LIFECYCLE = (
    "the lifecycle service creates it when it starts (in its --namespace); start it first, or "
    "point the edge at it with --namespace and --proof-secret"
)


async def _when_created(load: Callable[[], Awaitable[_T]], wait_s: float) -> _T:
    """`load()`, retried while the Secret it reads does not exist yet, for up to `wait_s`:
    the gateway's pods start together, and the lifecycle service (or AgentCube's router)
    makes these Secrets at its own start."""
    from extproc.k8s.identity import SecretMissing

    deadline = time.monotonic() + wait_s
    said = False
    while True:
        try:
            return await load()
        except SecretMissing as missing:
            if time.monotonic() + _SECRET_POLL_S > deadline:
                raise
            if not said:
                logging.getLogger(__name__).info("waiting up to %gs: %s", wait_s, missing)
                said = True
        await asyncio.sleep(_SECRET_POLL_S)


async def with_cluster_secrets(settings: EdgeSettings) -> EdgeSettings:
    """Kubernetes mode: `settings` with what the edge reads through the API at start, the
    router identity from AgentCube's namespace, the client certificate for the lifecycle's
    mutual TLS (unless given as files) and, with the Kubernetes directory, the proof key.

    SecretUnavailable (SecretMissing after `secret_wait_s`) with a one-line message when one
    cannot be had; DomainError when the API cannot be asked."""
    from extproc.k8s.client import api_client
    from extproc.k8s.identity import SecretUnavailable, load_identity, read_secret
    from extproc.k8s.lifecycle_tls import load_client_tls
    from extproc.k8s.object_proof import load_proof_key
    from extproc.k8s.resources import Resources

    kube = settings.kubernetes
    client = api_client(kube.kubeconfig)
    close_client: Callable[[], None] = client.close  # the client's own methods are untyped
    api = Resources(client)

    async def proof_key() -> bytes:
        # Absent is worth waiting for (SecretMissing); the loader then says what is wrong.
        await read_secret(api, kube.namespace, kube.proof_secret, missing=_MADE_BY_LIFECYCLE)
        try:
            return await load_proof_key(api, kube.namespace, kube.proof_secret)
        except ValueError as error:
            raise SecretUnavailable(str(error)) from error

    try:
        identity = await _when_created(
            lambda: load_identity(api, kube.identity_namespace, kube.identity_secret, create=False),
            kube.secret_wait_s,
        )
        tls = settings.directory.lifecycle_tls
        if tls is None and kube.lifecycle_tls_secret:
            tls = await _when_created(
                lambda: load_client_tls(api, kube.namespace, kube.lifecycle_tls_secret),
                kube.secret_wait_s,
            )
        key = kube.proof_key
        if kube.directory_source == "kubernetes":
            key = await _when_created(proof_key, kube.secret_wait_s)
    finally:
        api.close()
        close_client()
    return replace(
        settings,
        tokens=replace(settings.tokens, identity=identity),
        directory=replace(settings.directory, lifecycle_tls=tls),
        kubernetes=replace(kube, proof_key=key),
    )


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
        log_format, log_level = log_options(args)
    except ValueError as error:
        args.parser.error(str(error))
    setup_logging("edge", log_format, log_level)
    import uvloop

    return uvloop.run(_serve(settings))


async def _serve(settings: EdgeSettings) -> int:
    from extproc.edge.server import run as serve

    if settings.kubernetes.enabled:
        from extproc.k8s.identity import SecretUnavailable

        try:
            settings = await with_cluster_secrets(settings)
        except (SecretUnavailable, DomainError) as error:
            # what a person must fix: one line that says so, not a traceback
            print(f"agentcube-e2b edge: {error}", file=sys.stderr)
            return 1
    await serve(settings)
    return 0
