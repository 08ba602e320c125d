"""What varies between one Envoy deployment of the gateway and another.

The admin interface and the edge endpoints are either loopback TCP (`HostPort`) or unix
sockets (`UnixSocket`, Envoy's `pipe` addresses). `up` uses sockets in its private run
directory, so only the gateway's own user can stop Envoy or talk to the edge; the committed
`envoy/envoy.yaml` and Kubernetes (edge and Envoy in one pod) use loopback TCP, which needs
no directory to exist on the host that runs it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from extproc.core.addresses import HostPort as HostPort  # re-exported: Envoy's TCP endpoints
from extproc.core.flags import UNIX_PREFIX, unix_socket_path

DEFAULT_DOMAIN = "e2b.localhost"


@dataclass(frozen=True)
class UnixSocket:
    """A unix socket, written `unix:/ABS/PATH` (what gRPC takes too)."""

    path: Path

    @classmethod
    def parse(cls, text: str) -> UnixSocket:
        path = unix_socket_path(text)
        if path is None:
            raise ValueError(f"expected unix:/PATH, got {text!r}")
        return cls(path)

    def __str__(self) -> str:
        return f"{UNIX_PREFIX}{self.path}"


Endpoint = HostPort | UnixSocket


def parse_endpoint(text: str) -> Endpoint:
    """`unix:/ABS/PATH` or `HOST:PORT`; ValueError naming what was expected."""
    return UnixSocket.parse(text) if text.startswith(UNIX_PREFIX) else HostPort.parse(text)


@dataclass(frozen=True)
class EnvoySettings:
    """Everything the bootstrap depends on; the defaults are the contract's local addresses."""

    # the public listener (HTTP/1.1 and h2c); default 127.0.0.1:8081
    listen: HostPort = field(default=HostPort("127.0.0.1", 8081))
    # the admin interface: a unix socket (made 0600) or a loopback address (it can stop
    # Envoy); default 127.0.0.1:9901
    admin: Endpoint = field(default=HostPort("127.0.0.1", 9901))
    # the sandbox domain: `api.<domain>` is the platform API, `{port}-{id}.<domain>` sandboxes
    domain: str = DEFAULT_DOMAIN
    # the edge gRPC servers (ext_authz + ext_proc), one endpoint per edge process, each an IP
    # literal and port or a unix socket; default 127.0.0.1:9001
    edges: tuple[Endpoint, ...] = field(default=(HostPort("127.0.0.1", 9001),))
    # a network namespace (a file such as /run/netns/NAME) in which Envoy opens its
    # connections to sandboxes, so they reach sandbox addresses that exist only there;
    # default None: Envoy's own namespace
    sandbox_netns: Path | None = None
    # the lifecycle service's volume content API (HTTP/1.1): an IP literal and port or a
    # unix socket; default None: not routed (volume content requests then reach the platform
    # API, which answers 401)
    volume_content: Endpoint | None = None
    # the lifecycle service's upload server for template build files (HTTP/1.1): a unix
    # socket or an IP literal and port; default None: not routed (the SDK's `copy` uploads
    # then reach the platform API, which answers 404)
    template_files: Endpoint | None = None
    # the fast path: Envoy takes its routes and a runtime layer from the edges over ADS
    # (extproc/edge/fast_path.py), so requests for known running sandboxes skip ext_authz;
    # default False: the routes are static in the bootstrap and every request is checked
    fast_path: bool = False

    def __post_init__(self) -> None:
        if not self.edges:
            raise ValueError("at least one edge endpoint is required")
        if isinstance(self.admin, HostPort) and (
            not self.admin.is_ip or not _is_loopback(self.admin.host)
        ):
            raise ValueError(
                f"admin must listen on a loopback IP or a unix socket, got {self.admin}"
            )
        for endpoint in (self.listen, *self.edges, self.volume_content, self.template_files):
            if isinstance(endpoint, HostPort) and not endpoint.is_ip:
                raise ValueError(f"expected an IP literal, got {endpoint}")
        if self.sandbox_netns is not None and not self.sandbox_netns.is_absolute():
            raise ValueError(f"sandbox_netns must be an absolute path, got {self.sandbox_netns}")
        if not self.domain or self.domain.startswith(".") or "*" in self.domain:
            raise ValueError(f"expected a DNS domain such as e2b.localhost, got {self.domain!r}")


def _is_loopback(host: str) -> bool:
    return ipaddress.ip_address(host).is_loopback
