"""Which sandbox and port a data-plane request is for, by E2B's client-proxy rules.

E2B's proxy (`GetTargetFromRequest`) routes by the `E2b-Sandbox-Id`/`E2b-Sandbox-Port`
headers only when the Host is shared (localhost, an IP literal or `sandbox.<domain>`) and at
least one of them is present; otherwise it reads the left-most Host label `{port}-{id}`. We
keep those rules exactly, including the error texts, because the SDK picks the scheme by
domain and we must accept whichever it chose. This runs on every sandbox request, so it does
a few string operations and no regex on the common path.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from extproc.core.errors import InvalidArgument

ENVD_PORT = 49983
MISSING_HEADER = "missing header"
INVALID_HOST = "Invalid host"
INVALID_SANDBOX_ID = "Invalid sandbox ID"
INVALID_SANDBOX_PORT = "Invalid sandbox port"

_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_DIGITS = frozenset("0123456789")
_IPV4_CHARS = frozenset("0123456789.")


@dataclass(frozen=True, slots=True)
class Target:
    sandbox_id: str
    port: int


def is_sandbox_id(text: str) -> bool:
    """E2B's `^[a-z0-9]+$`: ids never contain '-', because hosts split on it."""
    return bool(text) and _ID_CHARS.issuperset(text)


def _strip_port(host: str) -> tuple[str, bool]:
    """(host without port, whether it is an IP literal)."""
    if host.startswith("["):
        end = host.find("]")
        # only a real IPv6 literal is one: `[not-an-ip]` is a name like any other
        return (host[1:end], True) if end > 0 and _is_ip(host[1:end]) else (host, False)
    if host.count(":") > 1:
        return host, _is_ip(host)
    name = host.split(":", 1)[0]
    return name, bool(name) and _IPV4_CHARS.issuperset(name) and _is_ip(name)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _parse_port(text: str) -> int:
    if not text or len(text) > 5 or not _DIGITS.issuperset(text):
        raise InvalidArgument(INVALID_SANDBOX_PORT)
    port = int(text)
    if not 0 < port < 65536:
        raise InvalidArgument(INVALID_SANDBOX_PORT)
    return port


def _checked(sandbox_id: str, port_text: str) -> Target:
    if not is_sandbox_id(sandbox_id):
        raise InvalidArgument(INVALID_SANDBOX_ID)
    return Target(sandbox_id, _parse_port(port_text))


def parse_target(
    host: str, header_id: str | None, header_port: str | None, shared_host: str
) -> Target:
    """Parse the target; `shared_host` is `sandbox.<domain>`, lowercase.

    Raises InvalidArgument with one of E2B's messages when the request names no valid target.
    """
    host = host.lower()
    name, is_ip = _strip_port(host)
    if (header_id is not None or header_port is not None) and (
        is_ip or name == shared_host or name == "localhost"
    ):
        if header_id is None or header_port is None:
            raise InvalidArgument(MISSING_HEADER)
        return _checked(header_id, header_port)
    label = name.split(".", 1)[0]
    parts = label.split("-")
    if len(parts) < 2 or is_ip or name.startswith("["):
        raise InvalidArgument(INVALID_HOST)
    return _checked(parts[1], parts[0])
