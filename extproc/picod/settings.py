"""picod's settings: one frozen dataclass, filled from flags and AGENTCUBE_E2B_PICOD_* env."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from extproc.core.daemon_auth import DaemonAuthSettings

# The envd version we report. The SDK gates features on it (notes §4.5): 0.5.7 streamed and
# gzip uploads, 0.6.2 file metadata, 0.6.3 watch include_entry, 0.6.4 network mounts.
# Raise it only together with the features it promises.
ENVD_VERSION = "0.6.4"

# E2B's defaults for the sandbox user.
DEFAULT_USER = "user"
DEFAULT_HOME = Path("/home/user")

# Header the edge uses to hand on the SDK's `Authorization: Basic base64(user:)` choice,
# because behind the gateway `Authorization` carries the gateway's JWT. Envoy strips it from
# client requests before ext_authz runs, so only the edge can set it; picod trusts it only
# on requests that carried a valid gateway JWT.
USER_HEADER = "x-agentcube-e2b-user"


@dataclass(frozen=True)
class PicodSettings(DaemonAuthSettings):
    # Address to listen on (default 0.0.0.0; the envd port is 49983).
    host: str = "0.0.0.0"
    port: int = 49983
    # Directory (0700) where a binding made by `/init` is kept, so picod restarted in the same
    # pod comes back bound. None (the default): the binding lives in memory only.
    state_dir: Path | None = None
    # The default user's name and home; relative paths resolve against the user's home.
    default_user: str = DEFAULT_USER
    home: Path = DEFAULT_HOME
    # Env vars every process gets (the sandbox's envVars); also served by GET /envs.
    env_vars: dict[str, str] = field(default_factory=dict)
    # Largest unary request body / RPC message accepted, in bytes (default 16 MiB).
    max_message_bytes: int = 16 * 1024 * 1024
    # Largest /files upload accepted, in bytes; None (the default) means only the disk limits.
    max_upload_bytes: int | None = None
    # Seconds between the samples picod keeps of itself for `GET /metrics?start=&end=` (the
    # series Kubernetes mode serves; default 5.0). 0: none kept, a series is one sample now.
    metrics_interval_s: float = 5.0
    # Most samples kept; the oldest drop off first (default 720: an hour at 5 s).
    metrics_max_samples: int = 720
    envd_version: str = ENVD_VERSION
    # An fd picod writes one byte to, and closes, once it serves: how the lifecycle service
    # learns a new sandbox is up without polling it (default None: none).
    ready_fd: int | None = None
