"""Edge settings: one frozen dataclass per concern, composed into `EdgeSettings`.

Every field has a flag and an `AGENTCUBE_E2B_EDGE_*` environment variable (see command.py);
the defaults match docs/contracts/README.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from extproc.core.backoff import Backoff
from extproc.core.identity import RouterIdentity, TlsIdentity
from extproc.k8s.settings import InformerSettings, KeySourceSettings

KeysSource = Literal["files", "kubernetes"]
DirectorySource = Literal["lifecycle", "kubernetes"]


@dataclass(frozen=True, slots=True)
class KeyStoreSettings:
    # Directory holding e2b-api-keys.json and e2b-api-key-config.json. Default <state-dir>/keys.
    directory: Path
    # Seconds between stat polls of the two files; a change is live within one period.
    # Default 0.25.
    poll_interval_s: float = 0.25


# WatchSandboxes reconnects
WATCH_BACKOFF = Backoff(initial_s=0.1, max_s=5.0)


@dataclass(frozen=True, slots=True)
class DirectorySettings:
    # Lifecycle gRPC address, unix:/PATH or HOST:PORT. Default 127.0.0.1:9002.
    lifecycle_target: str = "127.0.0.1:9002"
    # 0600 file with the lifecycle service's caller token, sent as `authorization: Bearer`
    # on every lifecycle call. Default None: no token (Kubernetes mode uses mutual TLS).
    lifecycle_token_file: Path | None = None
    # The edge's client certificate, its key and the CA of the lifecycle's server
    # certificate, for mutual TLS to the lifecycle (Kubernetes mode: read from Secret
    # e2b-lifecycle-tls, or from --lifecycle-tls-dir). Default None: plaintext.
    lifecycle_tls: TlsIdentity | None = field(default=None, repr=False)
    # Seconds a GetSandbox fallback read may take before the request gets 503. Default 1.0.
    lookup_timeout_s: float = 1.0
    # Seconds an id that lifecycle said does not exist stays cached as missing. Default 2.0.
    negative_ttl_s: float = 2.0
    # Most ids kept in the negative cache (a flood of random ids cannot grow memory). 10000.
    negative_max: int = 10_000
    # Seconds between WatchSandboxes reconnects: 0.1, doubling up to 5.0.
    backoff: Backoff = WATCH_BACKOFF


@dataclass(frozen=True, slots=True)
class KubernetesSettings:
    # Where the API key index comes from: "files" (<state-dir>/keys, polled) or "kubernetes"
    # (informers on Secret e2b-api-keys and ConfigMap e2b-api-key-config). Default files.
    keys_source: KeysSource = "files"
    # Where the routing directory comes from: "lifecycle" (WatchSandboxes) or "kubernetes"
    # (informers on Sandboxes and Pods, see docs/contracts/README.md). Default lifecycle.
    directory_source: DirectorySource = "lifecycle"
    # Kubeconfig file; None: the pod's service account, else ~/.kube/config. Default None.
    kubeconfig: Path | None = None
    # Namespace and names of the two key documents. Default agentcube-system.
    keys: KeySourceSettings = field(default_factory=KeySourceSettings)
    # List/watch timeouts and backoff of every informer.
    informer: InformerSettings = field(default_factory=InformerSettings)
    # Seconds a Check for a sandbox id the informers do not (yet) show as running waits for
    # them before answering "not found"; it covers the watch lag right after a create and
    # must stay under Envoy's ext_authz timeout (250 ms). Default 0.2.
    miss_wait_s: float = 0.2
    # Our namespace, where the lifecycle service keeps the TLS and proof-key Secrets.
    # Default agentcube-system (the command defaults it from $POD_NAMESPACE when set).
    namespace: str = "agentcube-system"
    # AgentCube's namespace and the Secret there with the router identity the edge signs
    # picod JWTs with. Defaults agentcube (the command: $AGENTCUBE_NAMESPACE when set) and
    # picod-router-identity.
    identity_namespace: str = "agentcube"
    identity_secret: str = "picod-router-identity"  # noqa: S105 (a Secret name)
    # Secret in `namespace` with the edge's client certificate for the lifecycle's mutual
    # TLS; "" dials the lifecycle in plaintext. Default e2b-lifecycle-tls.
    lifecycle_tls_secret: str = "e2b-lifecycle-tls"  # noqa: S105 (a Secret name)
    # Secret in `namespace` with the key proving which Sandboxes the lifecycle wrote
    # (extproc.k8s.object_proof). Default e2b-object-proof-key.
    proof_secret: str = "e2b-object-proof-key"  # noqa: S105 (a Secret name)
    # That key, read at start by the command (b"" until then, and without a Kubernetes
    # directory).
    proof_key: bytes = field(default=b"", repr=False)
    # Seconds start-up waits for a Secret above that does not exist yet (the lifecycle
    # service, or AgentCube's router, creates it when it starts) before giving up.
    # Default 60.0.
    secret_wait_s: float = 60.0

    @property
    def enabled(self) -> bool:
        return self.keys_source == "kubernetes" or self.directory_source == "kubernetes"


@dataclass(frozen=True, slots=True)
class TokenSettings:
    # PEM files of the router identity; created if absent. Default <state-dir>/identity.
    # Used when `identity` is None (local mode).
    identity_directory: Path
    # The router identity read from AgentCube's Secret (Kubernetes mode; the command reads
    # it). Default None: the files in `identity_directory`.
    identity: RouterIdentity | None = field(default=None, repr=False)
    # Seconds a picod JWT is valid (exp - iat). Default 300, as AgentCube's router.
    lifetime_s: int = 300
    # Re-sign a cached token when fewer than this many seconds remain. Default 60.
    refresh_margin_s: int = 60
    # Most sandboxes with a cached token. Default 100000.
    cache_max: int = 100_000


@dataclass(frozen=True, slots=True)
class FastPathSettings:
    # The static routes (a serialized RouteConfiguration, written by `up`) to serve Envoy
    # over xDS with a fast route per running sandbox added (fast_path.py). Default None: no
    # fast path, Envoy's routes are static and every request is checked.
    routes_file: Path | None = None
    # Seconds a change waits for others to come with it before the routes are rebuilt and
    # pushed (a burst of creates is one push). Default 0.005.
    coalesce_s: float = 0.005
    # Seconds before its end that a sandbox leaves the fast path, so the Check (which ends
    # it to the second) answers its last requests. Default 1.0.
    expiry_margin_s: float = 1.0
    # Fraction of a JWT's lifetime after which the fast path re-signs and re-pushes it.
    # Default 0.6.
    refresh_fraction: float = 0.6
    # Seconds a platform call that killed, paused or otherwise changed a sandbox waits for
    # Envoy to stop serving the sandbox's old fast route before answering. Default 2.0.
    landed_wait_s: float = 2.0
    # JWTs signed per batch off the event loop (a batch is then pushed). Default 256.
    sign_batch: int = 256


@dataclass(frozen=True, slots=True)
class EdgeSettings:
    # gRPC listen address for ext_authz, ext_proc and health: unix:/PATH (made 0600) or
    # HOST:PORT. Default 127.0.0.1:9001.
    listen: str
    keys: KeyStoreSettings
    directory: DirectorySettings
    tokens: TokenSettings
    # Sandbox domain: hosts are {port}-{id}.<domain>, `domain` in API answers. e2b.localhost.
    domain: str = "e2b.localhost"
    # Prometheus GET /metrics on unix:/PATH (made 0600) or HOST:PORT; empty disables it.
    # Default 127.0.0.1:9091.
    metrics_listen: str = "127.0.0.1:9091"
    # Seconds SIGTERM waits for in-flight RPCs before cancelling them. Default 5.0.
    shutdown_grace_s: float = 5.0
    # Largest request body the platform API accepts, bytes (Envoy buffers up to 1 MiB).
    max_body_bytes: int = field(default=1 << 20)
    # Kubernetes mode: key and directory sources, informer settings.
    kubernetes: KubernetesSettings = field(default_factory=KubernetesSettings)
    # The fast path (xDS to Envoy); off unless `fast_path.routes_file` is set.
    fast_path: FastPathSettings = field(default_factory=FastPathSettings)

    @staticmethod
    def for_state_dir(state_dir: Path, **overrides: object) -> EdgeSettings:
        """Settings with the contract's file layout under `state_dir`."""
        values: dict[str, object] = {
            "listen": "127.0.0.1:9001",
            "keys": KeyStoreSettings(directory=state_dir / "keys"),
            "directory": DirectorySettings(),
            "tokens": TokenSettings(identity_directory=state_dir / "identity"),
        }
        values.update(overrides)
        return EdgeSettings(**values)  # type: ignore[arg-type]
