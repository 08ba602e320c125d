"""`agentcube-e2b lifecycle`: flags (each also AGENTCUBE_E2B_LIFECYCLE_<FLAG>) -> settings.

gRPC and the backend are imported only in `run`, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from extproc.core.caller_token import read_token_file
from extproc.core.errors import DomainError
from extproc.core.flags import (
    FALSE_WORDS,
    TRUE_WORDS,
    EnvDefaults,
    grpc_address,
    integer_arg,
    namespace_arg,
    number_arg,
    secret_name_arg,
)
from extproc.core.logs import add_log_flags, log_options, setup_logging
from extproc.lifecycle.settings import (
    KubernetesSettings,
    LifecycleSettings,
    LocalSettings,
    ServerSettings,
)

ENV = EnvDefaults("AGENTCUBE_E2B_LIFECYCLE_")
# AgentCube's own variable for its namespace (its router reads it): the identity's default.
AGENTCUBE_NAMESPACE_ENV = "AGENTCUBE_NAMESPACE"
AGENT_SANDBOX_VERSIONS = ("auto", "v1alpha1", "v1beta1")
# Shared with `agentcube-e2b rootfs build`, so a built base is found by every command.
ROOTFS_CACHE_ENV = "AGENTCUBE_E2B_ROOTFS_CACHE_DIR"


def register(parser: argparse.ArgumentParser) -> None:
    server, local, kube = ServerSettings(), LocalSettings(), KubernetesSettings()
    add = parser.add_argument
    add("--backend", default=ENV.text("BACKEND", "local"), choices=["local", "kubernetes"],
        help="sandbox backend: local processes or agent-sandbox CRs (default local)")
    add("--listen", default=ENV.text("LISTEN", server.listen), metavar="unix:PATH|HOST:PORT",
        help=f"gRPC address; a unix socket is made 0600 (default {server.listen})")
    add("--caller-token-file", default=ENV.text("CALLER_TOKEN_FILE", None), metavar="FILE",
        help="require `authorization: Bearer <token>` with the token in this 0600 file on "
             "every RPC but health (default: no caller authentication)")
    add("--grace", default=ENV.text("GRACE", server.grace_s), metavar="SECONDS",
        help=f"seconds in-flight RPCs get on SIGTERM (default {server.grace_s})")
    add("--state-dir", default=ENV.text("STATE_DIR", str(local.state_dir)), metavar="DIR",
        help=f"SQLite db, token seed, templates.json, sandbox homes (default {local.state_dir})")
    add("--jwt-public-key", default=ENV.text("JWT_PUBLIC_KEY", None), metavar="FILE",
        help="PEM public key picod verifies the gateway's JWTs with (default none)")
    add("--pool-size", default=ENV.text("POOL_SIZE", local.pool_size), metavar="N",
        help=f"warm sandboxes kept for template base (default {local.pool_size})")
    add("--interpreter-pool-size", default=ENV.text("INTERPRETER_POOL_SIZE",
        local.interpreter_pool_size), metavar="N",
        help="warm sandboxes kept for template code-interpreter-v1 (default "
             f"{local.interpreter_pool_size})")
    add("--template-pool-size", default=ENV.text("TEMPLATE_POOL_SIZE",
        local.template_pool_size), metavar="N",
        help="warm sandboxes kept for each built template's current build (default "
             f"{local.template_pool_size})")
    add("--max-timeout", default=ENV.text("MAX_TIMEOUT", local.max_timeout_s), metavar="SECONDS",
        help=f"longest sandbox life (default {local.max_timeout_s})")
    add("--max-sandboxes", default=ENV.text("MAX_SANDBOXES", local.max_sandboxes), metavar="N",
        help=f"most live sandboxes, pool included (default {local.max_sandboxes})")
    add("--metrics-interval", default=ENV.text("METRICS_INTERVAL", local.metrics_interval_s),
        metavar="SECONDS", help="seconds between metric samples of each running sandbox "
        f"(default {local.metrics_interval_s:g})")
    add("--metrics-max-samples", default=ENV.text("METRICS_MAX_SAMPLES",
        local.metrics_max_samples), metavar="N", help="metric samples kept per sandbox, oldest "
        f"dropped first (default {local.metrics_max_samples})")
    add("--max-concurrent-starts", default=ENV.text("MAX_CONCURRENT_STARTS",
        local.max_concurrent_starts), metavar="N",
        help="sandboxes starting at once; more Creates wait for a slot (default "
             f"{local.max_concurrent_starts})")
    add("--picod-command", default=ENV.text("PICOD_COMMAND", None), metavar="CMD",
        help="picod command before its flags, shell-quoted (default: this Python -m "
             "extproc.cli picod)")
    add("--interpreter-command", default=ENV.text("INTERPRETER_COMMAND", None), metavar="CMD",
        help="code interpreter command before its flags, shell-quoted (default: this Python "
             "-m extproc.cli interpreter)")
    add("--isolation", default=ENV.text("ISOLATION", local.isolation),
        metavar="namespaces|none",
        help="namespaces: each sandbox in network, user, mount and pid namespaces of its own "
             "with its own root filesystem and limits, refusing to start when the host cannot "
             "do it; none: plain processes of this user (UNSAFE, debugging only) (default "
             f"{local.isolation})")
    add("--egress", default=ENV.text("EGRESS", local.egress), metavar="pasta|none|netns:NAME",
        help="outbound network of sandboxes created with allow_internet_access (default "
             f"{local.egress})")
    add("--max-processes", default=ENV.text("MAX_PROCESSES", local.max_processes), metavar="N",
        help=f"most processes per sandbox (default {local.max_processes})")
    add("--layer-mb", default=ENV.text("LAYER_MB", local.layer_mb), metavar="MIB",
        help=f"size of each sandbox's writable layer (default {local.layer_mb})")
    add("--volume-mb", default=ENV.text("VOLUME_MB", local.volume_mb), metavar="MIB",
        help=f"size of each volume, a sparse filesystem image (default {local.volume_mb})")
    add("--max-volumes", default=ENV.text("MAX_VOLUMES", local.max_volumes), metavar="N",
        help=f"most volumes, every tenant's together (default {local.max_volumes})")
    add("--max-volumes-per-tenant", metavar="N",
        default=ENV.text("MAX_VOLUMES_PER_TENANT", local.max_volumes_per_tenant),
        help=f"most volumes of one tenant (default {local.max_volumes_per_tenant})")
    add("--max-templates-per-tenant", metavar="N",
        default=ENV.text("MAX_TEMPLATES_PER_TENANT", local.max_templates_per_tenant),
        help="most templates and snapshots of one tenant, together (default "
             f"{local.max_templates_per_tenant})")
    add("--volume-content-listen", default=ENV.text("VOLUME_CONTENT_LISTEN",
        server.volume_content_listen), metavar="unix:PATH|HOST:PORT",
        help="serve the volume content API (HTTP/1.1, for Envoy) here; a unix socket is made "
             "0600 (default: not served)")
    add("--rootfs-cache-dir", default=os.environ.get(ROOTFS_CACHE_ENV), metavar="DIR",
        help=f"where the sandboxes' base root filesystem is built and kept (env "
             f"{ROOTFS_CACHE_ENV}, shared with `rootfs build`; default <state-dir>/rootfs)")
    add("--address-space-factor", default=ENV.text("ADDRESS_SPACE_FACTOR",
        local.address_space_factor), metavar="N",
        help="RLIMIT_AS per sandbox process = template memory x N (default "
             f"{local.address_space_factor})")
    add("--ready-timeout", default=ENV.text("READY_TIMEOUT", None), metavar="SECONDS",
        help="seconds a sandbox gets to start, warm kernel included; with kubernetes, pod "
             f"Ready and picod answering (default {local.ready_timeout_s}, kubernetes "
             f"{kube.ready_timeout_s})")
    add("--health-listen", default=ENV.text("HEALTH_LISTEN", server.health_listen),
        metavar="HOST:PORT",
        help="a second, plaintext address serving grpc.health.v1 only, for probes that "
             "cannot speak TLS (kubelet's gRPC probe) (default: none)")
    # --backend kubernetes only
    add("--namespace", default=ENV.text("NAMESPACE", os.environ.get("POD_NAMESPACE")
        or kube.namespace), metavar="NS",
        help="kubernetes: our namespace, where the token-seed, proof-key and TLS Secrets "
             f"live (default $POD_NAMESPACE, else {kube.namespace})")
    add("--identity-namespace", default=ENV.text("IDENTITY_NAMESPACE",
        os.environ.get(AGENTCUBE_NAMESPACE_ENV) or kube.identity_namespace), metavar="NS",
        help="kubernetes: AgentCube's namespace, where its router keeps the identity Secret "
             f"(default ${AGENTCUBE_NAMESPACE_ENV}, else {kube.identity_namespace})")
    add("--identity-secret", default=ENV.text("IDENTITY_SECRET", kube.identity_secret),
        metavar="NAME", help="kubernetes: AgentCube's Secret with the router identity "
        f"(private.pem, public.pem) (default {kube.identity_secret})")
    add("--create-identity", action="store_true", default=ENV.flag("CREATE_IDENTITY"),
        help="kubernetes: create the identity Secret in --identity-namespace when it is "
             "absent, for clusters without AgentCube (default: a missing Secret stops the "
             "service)")
    add("--seed-secret", default=ENV.text("SEED_SECRET", kube.seed_secret), metavar="NAME",
        help="kubernetes: Secret with the access-token seed, created if absent (default "
             f"{kube.seed_secret})")
    add("--proof-secret", default=ENV.text("PROOF_SECRET", kube.proof_secret), metavar="NAME",
        help="kubernetes: Secret with the key proving which Sandboxes we made, created if "
             f"absent (default {kube.proof_secret})")
    add("--lifecycle-tls-secret", default=ENV.text("LIFECYCLE_TLS_SECRET",
        kube.lifecycle_tls_secret), metavar="NAME",
        help="kubernetes: Secret with the mutual-TLS CA and certificates of this gRPC "
             "service, created if absent; '' serves plaintext with no caller authentication "
             f"(default {kube.lifecycle_tls_secret})")
    add("--agent-sandbox-version", default=ENV.text("AGENT_SANDBOX_VERSION",
        kube.agent_sandbox_version), choices=AGENT_SANDBOX_VERSIONS,
        help="kubernetes: agent-sandbox API version; auto asks API discovery and speaks "
             f"v1beta1 where it is served (default {kube.agent_sandbox_version})")
    add("--kubeconfig", default=ENV.text("KUBECONFIG", None), metavar="FILE",
        help="kubernetes: kubeconfig (default: in-cluster service account, else "
             "~/.kube/config)")
    add("--context", default=ENV.text("CONTEXT", None), metavar="NAME",
        help="kubernetes: kubeconfig context (default: the current one)")
    add("--picod-port", default=ENV.text("PICOD_PORT", kube.picod_port), metavar="PORT",
        help=f"kubernetes: picod's port on the pod IP (default {kube.picod_port})")
    add("--volume-storage-class", default=ENV.text("VOLUME_STORAGE_CLASS",
        kube.volume_storage_class), metavar="NAME",
        help="kubernetes: storage class of volumes' PersistentVolumeClaims (default: the "
             "cluster's default)")
    add("--volume-access-mode", default=ENV.text("VOLUME_ACCESS_MODE", kube.volume_access_mode),
        choices=["ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod"],
        help="kubernetes: access mode of volumes' PersistentVolumeClaims; ReadWriteMany shares "
             f"a volume across nodes (default {kube.volume_access_mode})")
    add("--picod-bundle-image", default=ENV.text("PICOD_BUNDLE_IMAGE", kube.picod_bundle_image),
        metavar="IMAGE", help="kubernetes: the gateway image, whose picod bundle templates "
        "built from any image get (default: none, such builds are refused)")
    add("--picod-scheme", default=ENV.text("PICOD_SCHEME", kube.picod_scheme),
        choices=["http", "https"], help=f"kubernetes: picod's scheme (default {kube.picod_scheme})")
    add("--kill-on-exit", default=ENV.text("KILL_ON_EXIT", "off"), metavar="on|off",
        help="kill every sandbox on SIGTERM instead of leaving them for re-adoption "
             "(default off)")
    add_log_flags(parser, ENV)
    parser.set_defaults(run=run, parser=parser)  # fmt: skip


def _switch(args: argparse.Namespace, name: str) -> bool:
    raw = str(getattr(args, name)).lower()
    if raw in TRUE_WORDS:
        return True
    if raw in FALSE_WORDS:
        return False
    raise ValueError(f"--{name.replace('_', '-')}: expected on or off, got {raw!r}")


def _isolation(args: argparse.Namespace) -> str:
    # `up --isolation {namespaces,none}` passes its word through; on/off stay accepted
    word = str(args.isolation).lower()
    if word in ("namespaces", "none"):
        return word
    return "namespaces" if _switch(args, "isolation") else "none"


def _egress(raw: str) -> str:
    if raw in ("pasta", "none") or (raw.startswith("netns:") and len(raw) > len("netns:")):
        return raw
    raise ValueError(f"--egress: expected pasta, none or netns:NAME, got {raw!r}")




def settings_from_args(args: argparse.Namespace) -> LifecycleSettings:
    """Build settings or raise ValueError naming the flag and what was expected."""
    listen = grpc_address(str(args.listen), "--listen")
    ready_given = args.ready_timeout is not None
    local_defaults, kube_defaults = LocalSettings(), KubernetesSettings()
    key = Path(args.jwt_public_key) if args.jwt_public_key else None
    if key is not None and not key.is_file():
        raise ValueError(f"--jwt-public-key: {key} is not a readable file")
    local = LocalSettings(
        state_dir=Path(args.state_dir),
        jwt_public_key=key,
        pool_size=integer_arg(args, "pool_size", 0),
        interpreter_pool_size=integer_arg(args, "interpreter_pool_size", 0),
        template_pool_size=integer_arg(args, "template_pool_size", 0),
        max_timeout_s=integer_arg(args, "max_timeout", 1),
        max_sandboxes=integer_arg(args, "max_sandboxes", 1),
        max_concurrent_starts=integer_arg(args, "max_concurrent_starts", 1),
        isolation=_isolation(args),
        egress=_egress(args.egress),
        max_processes=integer_arg(args, "max_processes", 1),
        layer_mb=integer_arg(args, "layer_mb", 64),
        volume_mb=integer_arg(args, "volume_mb", 64),
        max_volumes=integer_arg(args, "max_volumes", 0),
        max_volumes_per_tenant=integer_arg(args, "max_volumes_per_tenant", 0),
        max_templates_per_tenant=integer_arg(args, "max_templates_per_tenant", 0),
        rootfs_cache_dir=Path(args.rootfs_cache_dir) if args.rootfs_cache_dir else None,
        address_space_factor=integer_arg(args, "address_space_factor", 1),
        ready_timeout_s=number_arg(args, "ready_timeout", 0.1) if ready_given
        else local_defaults.ready_timeout_s,
        kill_on_exit=_switch(args, "kill_on_exit"),
        metrics_interval_s=number_arg(args, "metrics_interval", 0.05),
        metrics_max_samples=integer_arg(args, "metrics_max_samples", 1),
        picod_command=tuple(shlex.split(args.picod_command)) if args.picod_command
        else local_defaults.picod_command,
        interpreter_command=tuple(shlex.split(args.interpreter_command))
        if args.interpreter_command else local_defaults.interpreter_command,
    )  # fmt: skip
    picod_port = integer_arg(args, "picod_port", 1)
    if picod_port > 65535:
        raise ValueError(f"--picod-port: expected 1..65535, got {picod_port}")
    if args.agent_sandbox_version not in AGENT_SANDBOX_VERSIONS:  # reachable through env
        raise ValueError(f"--agent-sandbox-version: expected one of "
                         f"{', '.join(AGENT_SANDBOX_VERSIONS)}, got {args.agent_sandbox_version!r}")
    kubernetes = KubernetesSettings(
        namespace=namespace_arg(args, "namespace"),
        identity_namespace=namespace_arg(args, "identity_namespace"),
        identity_secret=secret_name_arg(args, "identity_secret"),
        create_identity=bool(args.create_identity),
        seed_secret=secret_name_arg(args, "seed_secret"),
        proof_secret=secret_name_arg(args, "proof_secret"),
        lifecycle_tls_secret=secret_name_arg(args, "lifecycle_tls_secret", optional=True),
        agent_sandbox_version=str(args.agent_sandbox_version),
        kubeconfig=Path(args.kubeconfig) if args.kubeconfig else None,
        context=args.context or None,
        max_timeout_s=local.max_timeout_s,
        ready_timeout_s=number_arg(args, "ready_timeout", 0.1) if ready_given
        else kube_defaults.ready_timeout_s,
        picod_port=picod_port,
        picod_scheme=str(args.picod_scheme),
        volume_mb=local.volume_mb,
        volume_storage_class=str(args.volume_storage_class),
        volume_access_mode=str(args.volume_access_mode),
        picod_bundle_image=str(args.picod_bundle_image),
    )  # fmt: skip
    health_listen = grpc_address(str(args.health_listen), "--health-listen", optional=True)
    if health_listen and health_listen == listen:
        raise ValueError("--health-listen: must differ from --listen")
    server = ServerSettings(
        listen=listen, grace_s=number_arg(args, "grace", 0), health_listen=health_listen,
        volume_content_listen=grpc_address(
            str(args.volume_content_listen), "--volume-content-listen", optional=True
        ),
    )
    return LifecycleSettings(
        backend=args.backend, server=server, local=local, kubernetes=kubernetes
    )


def caller_token(args: argparse.Namespace) -> str | None:
    """The token of `--caller-token-file`, None without one; ValueError naming the flag."""
    if not args.caller_token_file:
        return None
    return read_token_file(Path(args.caller_token_file), "--caller-token-file")


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
        token = caller_token(args)
        log_format, log_level = log_options(args)
    except ValueError as exc:
        args.parser.error(str(exc))
    setup_logging("lifecycle", log_format, log_level)
    import uvloop

    from extproc.lifecycle.server import run as serve

    fatal: tuple[type[Exception], ...] = ()
    if settings.backend == "kubernetes":
        from extproc.k8s.identity import SecretUnavailable

        fatal = (SecretUnavailable, DomainError)
    try:
        return uvloop.run(serve(settings, token))
    except fatal as error:
        # What a person must fix (a Secret missing or forbidden, the API unreachable): one
        # line that says so, not a traceback.
        print(f"agentcube-e2b lifecycle: {error}", file=sys.stderr)
        return 1
