"""The one HOST:PORT parser (core/addresses.py), as a table."""

from __future__ import annotations

import pytest

from extproc.core.addresses import HostPort

# (text, options, (host, port) or the start of the error)
CASES: list[tuple[str, dict[str, bool], tuple[str, int] | str]] = [
    ("127.0.0.1:9002", {}, ("127.0.0.1", 9002)),
    ("localhost:1", {}, ("localhost", 1)),
    ("agentcube-e2b-lifecycle:65535", {}, ("agentcube-e2b-lifecycle", 65535)),
    ("[::1]:9002", {}, ("::1", 9002)),
    ("[fd00::7]:49983", {}, ("fd00::7", 49983)),
    (":49983", {"empty_host": True}, ("", 49983)),
    ("127.0.0.1:0", {"port_zero": True}, ("127.0.0.1", 0)),
    (":49983", {}, "expected HOST:PORT with a host"),
    ("127.0.0.1:0", {}, "expected a port from 1 to 65535"),
    ("127.0.0.1:65536", {"port_zero": True}, "expected a port from 0 to 65535"),
    ("127.0.0.1:99999999999999999999", {}, "expected a port from 1"),
    ("127.0.0.1", {}, "expected HOST:PORT, got"),
    ("", {"empty_host": True}, "expected HOST:PORT, got"),
    ("127.0.0.1:", {}, "expected HOST:PORT, got"),
    ("127.0.0.1:-1", {}, "expected HOST:PORT, got"),
    ("127.0.0.1:+80", {}, "expected HOST:PORT, got"),
    ("127.0.0.1: 80", {}, "expected HOST:PORT, got"),
    ("127.0.0.1:٨٠", {}, "expected HOST:PORT, got"),  # Arabic-Indic digits: isdigit() is True
    ("127.0.0.1:8a", {}, "expected HOST:PORT, got"),
    ("unix:/run/x.sock", {}, "expected HOST:PORT, got"),
    ("::1:9002", {}, "expected HOST:PORT with an IPv6 host in brackets"),
    ("[::1:9002", {}, "expected HOST:PORT with an IPv6 host in brackets"),
    ("::1]:9002", {}, "expected HOST:PORT with an IPv6 host in brackets"),
    ("[127.0.0.1]:9002", {}, "expected an IPv6 address in brackets"),
    ("[]:9002", {"empty_host": True}, "expected an IPv6 address in brackets"),
]


@pytest.mark.parametrize(("text", "options", "expected"), CASES)
def test_parse(text: str, options: dict[str, bool], expected: tuple[str, int] | str) -> None:
    if isinstance(expected, str):
        with pytest.raises(ValueError, match="^" + expected.replace("+", r"\+")) as caught:
            HostPort.parse(text, **options)
        assert repr(text) in str(caught.value)  # the error shows what was given
    else:
        assert HostPort.parse(text, **options) == HostPort(*expected)


@pytest.mark.parametrize(
    ("address", "text", "is_ip"),
    [
        (HostPort("127.0.0.1", 80), "127.0.0.1:80", True),
        (HostPort("::1", 80), "[::1]:80", True),
        (HostPort("lifecycle", 9002), "lifecycle:9002", False),
    ],
)
def test_written_back_as_parsed(address: HostPort, text: str, is_ip: bool) -> None:
    assert str(address) == text
    assert HostPort.parse(text) == address
    assert address.is_ip is is_ip
