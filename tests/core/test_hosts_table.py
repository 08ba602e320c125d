"""core/hosts.py as tables: which sandbox and port a data-plane request names, by E2B's
client-proxy rules (notes §7, "Target parsing"): header routing only on a shared host
(localhost, an IP literal, `sandbox.<domain>`) when a routing header is present; otherwise
the left-most Host label `{port}-{id}`; ids `^[a-z0-9]+$`; ports 1-65535 in ASCII digits.
"""

from __future__ import annotations

import pytest

from extproc.core.errors import InvalidArgument
from extproc.core.hosts import (
    INVALID_HOST,
    INVALID_SANDBOX_ID,
    INVALID_SANDBOX_PORT,
    MISSING_HEADER,
    Target,
    is_sandbox_id,
    parse_target,
)

SHARED = "sandbox.e2b.test"
ID = "i0abc123"


def _parse(host: str, header_id: str | None = None, header_port: str | None = None) -> object:
    """The Target, or the error message."""
    try:
        return parse_target(host, header_id, header_port, SHARED)
    except InvalidArgument as error:
        return error.message


# (host, E2b-Sandbox-Id, E2b-Sandbox-Port, expected Target or error message)
HOST_ROUTED = [
    ("49983-i0abc123.e2b.test", None, None, Target(ID, 49983)),
    ("49999-i0abc123.e2b.test:443", None, None, Target(ID, 49999)),
    ("3000-i0abc123.e2b.test", None, None, Target(ID, 3000)),
    # Host names are case-insensitive: the Host is read lowercased.
    ("49983-I0ABC123.E2B.TEST", None, None, Target(ID, 49983)),
    # Only the left-most label counts; the domain is Envoy's virtual host's business.
    ("49983-i0abc123.elsewhere.example", None, None, Target(ID, 49983)),
    # E2B takes part 1 of the split as the id: more dashes are ignored, as E2B does.
    ("49983-i0abc123-extra.e2b.test", None, None, Target(ID, 49983)),
    ("1-a.e2b.test", None, None, Target("a", 1)),
    ("65535-a.e2b.test", None, None, Target("a", 65535)),
    ("00080-a.e2b.test", None, None, Target("a", 80)),  # five digits, leading zeros
    # Routing headers on a sandbox host do not move the request to another sandbox.
    ("49983-i0abc123.e2b.test", "other", "3000", Target(ID, 49983)),
    ("49983-i0abc123.e2b.test", "other", None, Target(ID, 49983)),
    # No label of the form {port}-{id}.
    ("i0abc123.e2b.test", None, None, INVALID_HOST),
    ("", None, None, INVALID_HOST),
    ("e2b.test", None, None, INVALID_HOST),
    ("sandbox.e2b.test", None, None, INVALID_HOST),
    ("localhost:8080", None, None, INVALID_HOST),
    # An IP literal never carries a sandbox in its name, even one with dashes around it.
    ("127.0.0.1", None, None, INVALID_HOST),
    ("10.0.0.1:49983", None, None, INVALID_HOST),
    ("[::1]:49983", None, None, INVALID_HOST),
    ("::1", None, None, INVALID_HOST),
    # Bad ids: the id is checked before the port.
    ("49983-.e2b.test", None, None, INVALID_SANDBOX_ID),
    ("49983-i0_abc.e2b.test", None, None, INVALID_SANDBOX_ID),
    ("49983-i0%61bc.e2b.test", None, None, INVALID_SANDBOX_ID),  # percent stays literal
    ("49983-\uff490abc.e2b.test", None, None, INVALID_SANDBOX_ID),  # fullwidth (IDN-ish) letter
    ("49983-i0abç.e2b.test", None, None, INVALID_SANDBOX_ID),  # non-ASCII letter
    ("49983-xn--abc.e2b.test", None, None, Target("xn", 49983)),  # punycode splits on '-'
    ("x-a.e2b.test", None, None, INVALID_SANDBOX_PORT),
    ("nope-bad_id.e2b.test", None, None, INVALID_SANDBOX_ID),
    # Bad ports: out of range, signs, spaces, other numerals, other bases.
    ("0-a.e2b.test", None, None, INVALID_SANDBOX_PORT),
    ("65536-a.e2b.test", None, None, INVALID_SANDBOX_PORT),
    ("99999-a.e2b.test", None, None, INVALID_SANDBOX_PORT),
    ("049983-a.e2b.test", None, None, INVALID_SANDBOX_PORT),  # six characters
    ("18446744073709551617-a.e2b.test", None, None, INVALID_SANDBOX_PORT),
    ("-a.e2b.test", None, None, INVALID_SANDBOX_PORT),
    ("+80-a.e2b.test", None, None, INVALID_SANDBOX_PORT),
    ("0x50-a.e2b.test", None, None, INVALID_SANDBOX_PORT),
    ("1e3-a.e2b.test", None, None, INVALID_SANDBOX_PORT),
    ("٤٩٩٨٣-a.e2b.test", None, None, INVALID_SANDBOX_PORT),  # Arabic-Indic digits
    (
        "\uff14\uff19\uff19\uff18\uff13-a.e2b.test",
        None,
        None,
        INVALID_SANDBOX_PORT,
    ),  # fullwidth digits
    ("²-a.e2b.test", None, None, INVALID_SANDBOX_PORT),
]

HEADER_ROUTED = [
    (SHARED, ID, "49983", Target(ID, 49983)),
    (SHARED + ":443", ID, "49999", Target(ID, 49999)),
    ("SANDBOX.E2B.TEST", ID, "49983", Target(ID, 49983)),
    ("localhost", ID, "3000", Target(ID, 3000)),
    ("localhost:8080", ID, "3000", Target(ID, 3000)),
    ("LocalHost:8080", ID, "3000", Target(ID, 3000)),
    ("127.0.0.1", ID, "49983", Target(ID, 49983)),
    ("127.0.0.1:8080", ID, "49983", Target(ID, 49983)),
    ("192.168.10.20:1", ID, "49983", Target(ID, 49983)),
    ("[::1]:8080", ID, "49983", Target(ID, 49983)),
    ("[::1]", ID, "49983", Target(ID, 49983)),
    ("::1", ID, "49983", Target(ID, 49983)),
    ("[2001:db8::1]:443", ID, "49983", Target(ID, 49983)),
    ("[::ffff:127.0.0.1]:8080", ID, "49983", Target(ID, 49983)),
    # One header alone is E2B's "missing header", whichever it is.
    (SHARED, ID, None, MISSING_HEADER),
    (SHARED, None, "49983", MISSING_HEADER),
    ("127.0.0.1", "", None, MISSING_HEADER),
    # Header values are checked as the host's would be, and never lowercased.
    (SHARED, "", "49983", INVALID_SANDBOX_ID),
    (SHARED, "I0ABC123", "49983", INVALID_SANDBOX_ID),
    (SHARED, "i0abc-123", "49983", INVALID_SANDBOX_ID),
    (SHARED, "i0abc123\r\nx: y", "49983", INVALID_SANDBOX_ID),
    (SHARED, "../i0abc123", "49983", INVALID_SANDBOX_ID),
    (SHARED, ID, "", INVALID_SANDBOX_PORT),
    (SHARED, ID, "0", INVALID_SANDBOX_PORT),
    (SHARED, ID, "65536", INVALID_SANDBOX_PORT),
    (SHARED, ID, "-1", INVALID_SANDBOX_PORT),
    (SHARED, ID, " 80", INVALID_SANDBOX_PORT),
    (SHARED, ID, "80 ", INVALID_SANDBOX_PORT),
    (SHARED, ID, "49983,3000", INVALID_SANDBOX_PORT),
    (SHARED, ID, "٤٩٩٨٣", INVALID_SANDBOX_PORT),
    (SHARED, "", "", INVALID_SANDBOX_ID),  # the id first
    # Hosts that only look shared get host routing, so no header can pick the sandbox.
    ("sandbox.e2b.test.", ID, "49983", INVALID_HOST),  # trailing dot: another name
    ("sandbox.e2b.test.evil.example", ID, "49983", INVALID_HOST),
    ("localhost.evil.example", ID, "49983", INVALID_HOST),
    ("evil-localhost", ID, "49983", INVALID_SANDBOX_PORT),
    ("0127.0.0.1", ID, "49983", INVALID_HOST),  # not an IPv4 literal (leading zero)
    ("1.2.3", ID, "49983", INVALID_HOST),
    ("2130706433", ID, "49983", INVALID_HOST),  # a decimal IPv4 is no IP literal either
    ("[::1", ID, "49983", INVALID_HOST),  # unclosed bracket
    ("sandbox.other.test", ID, "49983", INVALID_HOST),
    ("3000-other.e2b.test", ID, "49983", Target("other", 3000)),
    # only a real IPv6 literal in brackets is an IP host
    ("[not-an-ip]", ID, "49983", INVALID_HOST),
]


@pytest.mark.parametrize(("host", "header_id", "header_port", "expected"), HOST_ROUTED)
def test_host_routing(
    host: str, header_id: str | None, header_port: str | None, expected: object
) -> None:
    assert _parse(host, header_id, header_port) == expected


@pytest.mark.parametrize(("host", "header_id", "header_port", "expected"), HEADER_ROUTED)
def test_header_routing(
    host: str, header_id: str | None, header_port: str | None, expected: object
) -> None:
    assert _parse(host, header_id, header_port) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("i0abc123", True),
        ("a", True),
        ("0", True),
        ("", False),
        ("I0ABC123", False),
        ("i0abc-123", False),
        ("i0abc_123", False),
        ("i0abc 123", False),
        ("i0abc.123", False),
        ("\uff490abc", False),
        ("i0abç", False),
        ("٤", False),
        ("i0abc\n", False),
    ],
)
def test_is_sandbox_id(text: str, expected: bool) -> None:
    assert is_sandbox_id(text) is expected
