"""What varies between one Envoy deployment of the gateway and another."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

DEFAULT_DOMAIN = "e2b.localhost"


@dataclass(frozen=True)
class HostPort:
    """A literal `host:port` (Envoy's STATIC endpoints and listeners take IP literals)."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> HostPort:
        """Parse `HOST:PORT` or `[V6]:PORT`; raise ValueError naming what was expected."""
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"expected HOST:PORT, got {text!r}")
        host = host.removeprefix("[").removesuffix("]")
        number = int(port)
        if not 0 < number < 65536:
            raise ValueError(f"port out of range in {text!r}")
        return cls(host, number)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True


@dataclass(frozen=True)
class EnvoySettings:
    """Everything the bootstrap depends on; the defaults are the contract's local addresses."""

    # the public listener (HTTP/1.1 and h2c); default 127.0.0.1:8081
    listen: HostPort = HostPort("127.0.0.1", 8081)
    # the admin interface; must stay on a loopback address (it can stop Envoy)
    admin: HostPort = HostPort("127.0.0.1", 9901)
    # the sandbox domain: `api.<domain>` is the platform API, `{port}-{id}.<domain>` sandboxes
    domain: str = DEFAULT_DOMAIN
    # the edge gRPC servers (ext_authz + ext_proc), one endpoint per edge process
    edges: tuple[HostPort, ...] = field(default=(HostPort("127.0.0.1", 9001),))

    def __post_init__(self) -> None:
        if not self.edges:
            raise ValueError("at least one edge endpoint is required")
        if not self.admin.is_ip or not _is_loopback(self.admin.host):
            raise ValueError(f"admin must listen on a loopback IP, got {self.admin}")
        for endpoint in (self.listen, *self.edges):
            if not endpoint.is_ip:
                raise ValueError(f"expected an IP literal, got {endpoint}")
        if not self.domain or self.domain.startswith(".") or "*" in self.domain:
            raise ValueError(f"expected a DNS domain such as e2b.localhost, got {self.domain!r}")


def _is_loopback(host: str) -> bool:
    return ipaddress.ip_address(host).is_loopback
