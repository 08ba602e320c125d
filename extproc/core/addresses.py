"""`HOST:PORT`, as every flag, setting and upstream address here writes one: the one parser.

An IPv6 host goes in brackets (`[::1]:9002`), since its own colons would make the port
ambiguous; the host is kept without them. Callers differ only in what they allow: an empty
host ("all interfaces" for a listener) and port 0 ("pick a free one" for a server); the
rest (digits only, a port up to 65535) is the same everywhere.

Standard library only, and no `ipaddress` until asked: picod parses its `--listen` with
this at start-up, on every sandbox's create path.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_PORT = 65535


@dataclass(frozen=True)
class HostPort:
    """A host (a name or an IP literal, without brackets) and a port."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str, *, empty_host: bool = False, port_zero: bool = False) -> HostPort:
        """Parse `HOST:PORT` or `[IPV6]:PORT`.

        `empty_host` accepts `:PORT` (host ''); `port_zero` accepts port 0. Raises ValueError
        saying what was expected and what was given.
        """
        host, sep, port = text.rpartition(":")
        if not sep or not (port.isascii() and port.isdigit()):
            raise ValueError(f"expected HOST:PORT, got {text!r}")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
            if ":" not in host:
                raise ValueError(f"expected an IPv6 address in brackets, got {text!r}")
        elif ":" in host or "[" in host or "]" in host:
            raise ValueError(f"expected HOST:PORT with an IPv6 host in brackets, got {text!r}")
        if not host and not empty_host:
            raise ValueError(f"expected HOST:PORT with a host, got {text!r}")
        number = int(port)
        low = 0 if port_zero else 1
        if not low <= number <= MAX_PORT:
            raise ValueError(f"expected a port from {low} to {MAX_PORT}, got {text!r}")
        return cls(host, number)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def is_ip(self) -> bool:
        import ipaddress

        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True
