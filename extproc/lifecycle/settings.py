"""Settings of the lifecycle service: one frozen dataclass per concern, composed in a root.

Every field is a flag of `agentcube-e2b lifecycle` and an AGENTCUBE_E2B_LIFECYCLE_* env var
(see `command`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path


def _default_picod() -> tuple[str, ...]:
    # The same interpreter and package as this process: no PATH lookup inside the sandbox.
    return (sys.executable, "-m", "extproc.cli", "picod")


def default_interpreter_command() -> tuple[str, ...]:
    return (sys.executable, "-m", "extproc.cli", "interpreter")


@dataclass(frozen=True)
class ServerSettings:
    # gRPC listen address HOST:PORT (default 127.0.0.1:9002; port 0 picks a free one).
    listen: str = "127.0.0.1:9002"
    # Seconds in-flight RPCs get to finish on SIGTERM (default 5.0).
    grace_s: float = 5.0
    # A second, plaintext gRPC address serving grpc.health.v1 only, HOST:PORT (default ""
    # = none). For kubelet's gRPC probes, which cannot speak TLS, when `listen` is mutual
    # TLS (Kubernetes mode); it tells nothing but SERVING or NOT_SERVING.
    health_listen: str = ""
    # Where the volume content API is served over HTTP/1.1 for Envoy, unix:PATH (made 0600)
    # or HOST:PORT (default "" = not served). Local backend only.
    volume_content_listen: str = ""


@dataclass(frozen=True)
class LocalSettings:
    # State directory: SQLite db, token seed (0600), templates.json, sandbox homes
    # (default ./state/lifecycle).
    state_dir: Path = Path("state/lifecycle")
    # PEM public key picod verifies gateway JWTs with (default none: picod accepts only the
    # access token).
    jwt_public_key: Path | None = None
    # Warm sandboxes kept started for template `base` (default 2; 0 disables the pool).
    pool_size: int = 2
    # Warm sandboxes kept started for template `code-interpreter-v1` (default 1; 0 disables
    # it). Each holds a started Jupyter kernel (~100 MiB), so Create returns in milliseconds
    # instead of the kernel's start (seconds).
    interpreter_pool_size: int = 1
    # Warm sandboxes kept started for each built template's current build (default 0:
    # sandboxes of built templates start on demand). Each costs a running sandbox per
    # template, so it is for gateways with few templates that need fast creates.
    template_pool_size: int = 0
    # Longest sandbox life in seconds, create to end (default 3600 = 1 h, E2B's Hobby limit).
    max_timeout_s: int = 3600
    # The picod command line before its flags (default: this Python, -m extproc.cli picod).
    picod_command: tuple[str, ...] = field(default_factory=_default_picod)
    # The code interpreter's command line before its flags, for interpreter templates
    # (default: this Python, -m extproc.cli interpreter).
    interpreter_command: tuple[str, ...] = field(default_factory=default_interpreter_command)
    # How sandboxes are isolated (default "namespaces": own network, user, mount, pid, ipc
    # and uts namespaces, an overlay root filesystem, cgroup limits; the service refuses to
    # start when the host cannot provide them). "none" runs plain processes of this user
    # on loopback addresses: unsafe, for debugging only.
    isolation: str = "namespaces"
    # Where the base root filesystem is built and cached (default <state_dir>/rootfs).
    rootfs_cache_dir: Path | None = None
    # Outbound network for sandboxes created with allow_internet_access: "pasta" (user-mode
    # networking through the host's sockets, package passt), "none", or "netns:NAME" (a veth
    # into the named network namespace, e.g. an operator's egress namespace) (default
    # "pasta"; "none" with a warning when pasta is not installed).
    egress: str = "pasta"
    # Most processes per sandbox (cgroup pids.max, else RLIMIT_NPROC per sandbox uid)
    # (default 1024).
    max_processes: int = 1024
    # Size in MiB of each sandbox's writable layer, a sparse ext4 image: only what is
    # written takes disk (default 4096).
    layer_mb: int = 4096
    # RLIMIT_AS per sandbox process = template memory x this factor (default 4: virtual size
    # runs well above resident size for Python and threaded programs).
    address_space_factor: int = 4
    # Seconds a starting sandbox gets for picod's /health (and, for interpreter templates,
    # the warm kernel) (default 20.0).
    ready_timeout_s: float = 20.0
    # Sandboxes starting at once (default 8); more Creates queue for a slot. Starting is
    # CPU-bound (a Python interpreter each): 200 at once on 2 cores all miss the ready
    # timeout, while a few at a time each start in well under a second.
    max_concurrent_starts: int = 8
    # Most live sandboxes, pool included (default 1000; each gets its own 127.100.x.y).
    max_sandboxes: int = 1000
    # Kill every sandbox when the service stops on SIGTERM (default false: live sandboxes
    # keep running and the next start re-adopts them; pool sandboxes are always killed).
    kill_on_exit: bool = False
    # Seconds between metric samples of each running sandbox (default 5.0), and the samples
    # kept per sandbox, oldest dropped first (default 720: an hour at 5 s).
    metrics_interval_s: float = 5.0
    metrics_max_samples: int = 720
    # Size in MiB of each volume, a sparse ext4 image of its own: only what is written takes
    # disk (default 10240).
    volume_mb: int = 10240
    # Most volumes on this gateway, every tenant's together (default 1000; each holds a loop
    # device and a mount).
    max_volumes: int = 1000
    # What one tenant may keep, so that no tenant fills the disk for the others: volumes
    # (default 100, each up to `volume_mb`), and templates and snapshots together (default
    # 100, each layers of up to `layer_mb` a build or a snapshot wrote). Built-ins not counted.
    max_volumes_per_tenant: int = 100
    max_templates_per_tenant: int = 100


@dataclass(frozen=True)
class KubernetesSettings:
    # Our namespace: the token-seed, proof-key and TLS Secrets live here, created if absent
    # (default agentcube-system; the command defaults it from $POD_NAMESPACE when set).
    namespace: str = "agentcube-system"
    # AgentCube's namespace, where its router keeps the identity Secret (default agentcube,
    # as AgentCube's getting-started; the command defaults it from $AGENTCUBE_NAMESPACE,
    # AgentCube's own variable, when set).
    identity_namespace: str = "agentcube"
    # Secret with the router identity (private.pem PKCS#1 or PKCS#8, public.pem PKIX), made
    # by AgentCube's router; its warm-pool pods trust only that key (default
    # picod-router-identity).
    identity_secret: str = "picod-router-identity"  # noqa: S105 (a Secret name)
    # Create the identity Secret in `identity_namespace` when it is absent (default False:
    # a missing Secret stops the service with a message saying what to do). For clusters
    # without AgentCube; AgentCube's router, installed later, then loads ours.
    create_identity: bool = False
    # Secret with the envd access-token seed (hex under `seed`); created if absent
    # (default e2b-envd-token-seed).
    seed_secret: str = "e2b-envd-token-seed"  # noqa: S105 (a Secret name)
    # Secret with the key that proves which Sandboxes we wrote (extproc.k8s.object_proof);
    # created if absent (default e2b-object-proof-key).
    proof_secret: str = "e2b-object-proof-key"  # noqa: S105 (a Secret name)
    # Secret with the lifecycle gRPC's mutual-TLS CA and certificates
    # (extproc.k8s.lifecycle_tls); created if absent. "" serves plaintext: callers are then
    # not authenticated (default e2b-lifecycle-tls).
    lifecycle_tls_secret: str = "e2b-lifecycle-tls"  # noqa: S105 (a Secret name)
    # agent-sandbox API version to speak: "auto" (API discovery: v1beta1 where served, else
    # v1alpha1), "v1alpha1" or "v1beta1" (default auto).
    agent_sandbox_version: str = "auto"
    # Kubeconfig file and context; None: the pod's service account in a cluster, else
    # ~/.kube/config or $KUBECONFIG (default None).
    kubeconfig: Path | None = None
    context: str | None = None
    # Longest sandbox life in seconds, create to end (default 3600).
    max_timeout_s: int = 3600
    # Seconds a Create waits for the pod to be Ready and picod's /health to answer before
    # it rolls back (default 120.0: image pulls and scheduling take time).
    ready_timeout_s: float = 120.0
    # picod's port and scheme on the pod IP, for /health and /metrics (defaults 49983,
    # "http"; tests point them at local stand-ins).
    picod_port: int = 49983
    picod_scheme: str = "http"
    # Each volume's PersistentVolumeClaim: its size in MiB (default 10240), storage class
    # ("" = the cluster's default) and access mode (default ReadWriteOnce: sandboxes on one
    # node share it; ReadWriteMany, with a storage class that offers it, shares it across
    # nodes).
    volume_mb: int = 10240
    volume_storage_class: str = ""
    volume_access_mode: str = "ReadWriteOnce"
    # The image that carries picod's bundle (the gateway image), injected into templates
    # built from an image (lifecycle/kube_templates.py); "" refuses such builds (default "").
    picod_bundle_image: str = ""


@dataclass(frozen=True)
class LifecycleSettings:
    # Sandbox backend: "local" (processes on this machine) or "kubernetes" (agent-sandbox
    # CRs) (default "local").
    backend: str = "local"
    server: ServerSettings = field(default_factory=ServerSettings)
    local: LocalSettings = field(default_factory=LocalSettings)
    kubernetes: KubernetesSettings = field(default_factory=KubernetesSettings)

    @property
    def max_timeout_s(self) -> int:
        if self.backend == "kubernetes":
            return self.kubernetes.max_timeout_s
        return self.local.max_timeout_s
