"""A real gateway (`up`, namespace isolation) for tests that play a hostile tenant.

Sandboxes with `allow_internet_access` leave through a veth into an "internet" namespace
these tests create (`--egress netns:...`): these machines have no internet, so a server in
that namespace stands in for it. Its addresses exist only inside namespaces we create.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from support.gateway import Gateway, running_gateway

INTERNET_NETNS = f"e2btest-internet-{os.getpid()}"
INTERNET_ADDRESS = "10.214.0.2"  # networking.UPLINK_PEER: the egress namespace's end
INTERNET_PORT = 8000


@pytest.fixture(scope="package")
def internet() -> Iterator[str]:
    """A namespace with an HTTP server answering `internet` on INTERNET_PORT."""
    subprocess.run(["ip", "netns", "add", INTERNET_NETNS], check=True)
    server = None
    try:
        subprocess.run(["ip", "-n", INTERNET_NETNS, "link", "set", "lo", "up"], check=True)
        script = (
            "import http.server as h\n"
            "class H(h.BaseHTTPRequestHandler):\n"
            "    def do_GET(self):\n"
            "        self.send_response(200); self.end_headers(); self.wfile.write(b'internet')\n"
            "    def log_message(self, *a): pass\n"
            f"h.ThreadingHTTPServer(('0.0.0.0', {INTERNET_PORT}), H).serve_forever()\n"
        )
        server = subprocess.Popen(
            ["ip", "netns", "exec", INTERNET_NETNS, sys.executable, "-c", script]
        )
        yield INTERNET_NETNS
    finally:
        if server is not None:
            server.kill()
            server.wait()
        subprocess.run(["ip", "netns", "del", INTERNET_NETNS], check=False)


@pytest.fixture(scope="package")
def gateway(tmp_path_factory: pytest.TempPathFactory, internet: str) -> Iterator[Gateway]:
    state = tmp_path_factory.mktemp("isolation")
    env = {
        **os.environ,
        "AGENTCUBE_E2B_LIFECYCLE_EGRESS": f"netns:{internet}",
        "AGENTCUBE_E2B_LIFECYCLE_POOL_SIZE": "1",
        "AGENTCUBE_E2B_LIFECYCLE_INTERPRETER_POOL_SIZE": "0",
    }
    with running_gateway(state, state.parent / "isolation-gateway.log", env) as gateway:
        yield gateway
