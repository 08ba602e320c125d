"""The code interpreter's settings: one frozen dataclass, filled from flags and
AGENTCUBE_E2B_INTERPRETER_* env vars by `command.py`."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from extproc.core.daemon_auth import DaemonAuthSettings

# E2B's defaults: the Jupyter wrapper listens on 49999, envd on 49983, code runs in the
# sandbox user's home.
DEFAULT_PORT = 49999
DEFAULT_ENVD_URL = "http://127.0.0.1:49983"
DEFAULT_CWD = Path("/home/user")


@dataclass(frozen=True)
class InterpreterSettings(DaemonAuthSettings):
    # The auth settings are the base's; with an access token, /execute requires it: a
    # secure sandbox (see auth.py).
    # Address to listen on (default 0.0.0.0:49999, the SDK's JUPYTER_PORT).
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    # envd (picod) in the same sandbox; its GET /envs gives the sandbox's env vars.
    # None: do not fetch them.
    envd_url: str | None = DEFAULT_ENVD_URL
    # picod's binding file (`binding.json` in its state directory), where a warm-pool pod
    # learns its sandbox id and access token from picod's `/init`. Read only while there is
    # a JWT key and no `sandbox_id`. None (the default): none.
    binding_file: Path | None = None
    # Working directory of contexts created without a cwd (default /home/user).
    cwd: Path = DEFAULT_CWD
    # Seconds one execution may run before the kernel is interrupted; 0 = no server limit
    # (the SDK still closes the stream at its own timeout, which interrupts too).
    execution_timeout: float = 0.0
    # Seconds of silence on an execute stream before a keepalive line (default 5 s): well
    # under Envoy's and other proxies' idle timeouts.
    keepalive_interval: float = 5.0
    # Bytes of stdout and of stderr one execution may stream (default 1 MiB each); the
    # rest is dropped after one "output truncated" line.
    max_output_bytes: int = 1024 * 1024
    # Largest request body accepted, in bytes (default 16 MiB: code plus env vars).
    max_body_bytes: int = 16 * 1024 * 1024
    # Seconds a kernel gets to start and answer before it counts as failed.
    kernel_start_timeout: float = 60.0
    # Seconds an interrupted kernel gets to go idle before it is restarted instead.
    interrupt_grace: float = 5.0
    # The Python that runs the Python and Bash kernels (default: this server's).
    kernel_python: str = sys.executable
    # The kernels' PYTHONPATH; None (the default): this server's. A sandbox with the data
    # stack gives "" (the image's packages and the stack, not the gateway's venv).
    kernel_pythonpath: str | None = None
    # Import numpy, pandas and matplotlib.pyplot in each Python kernel before it is ready.
    preload: bool = False
