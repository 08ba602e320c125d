"""core/timeouts.py as tables: E2B's sandbox timeout rules (notes §8). Create refuses <= 0
and more than the maximum (absent: 300 s); SetSandboxTimeout sets now + t, shorter or longer,
capped at started_at + maximum, a negative t counting as 0; Connect/Refresh only lengthen.
"""

from __future__ import annotations

import pytest

from extproc.core.errors import InvalidArgument
from extproc.core.timeouts import DEFAULT_TIMEOUT_S, create_timeout, extend_end_at, set_end_at

HOUR = 3600
DAY = 24 * HOUR
INT64_MAX = 2**63 - 1

TOO_SHORT = "Timeout must be greater than 0"


def _too_long(hours: str) -> str:
    return f"Timeout cannot be greater than {hours} hours"


def _outcome(call: object) -> object:
    """The value, or the InvalidArgument message."""
    assert callable(call)
    try:
        return call()
    except InvalidArgument as error:
        return error.message


@pytest.mark.parametrize(
    ("requested", "max_timeout_s", "expected"),
    [
        (None, DAY, DEFAULT_TIMEOUT_S),
        (None, HOUR, 300),
        (None, 60, 60),  # the default never exceeds the maximum
        (1, HOUR, 1),
        (60, HOUR, 60),
        (HOUR, HOUR, HOUR),  # the maximum itself is allowed
        (HOUR + 1, HOUR, _too_long("1")),
        (DAY + 1, DAY, _too_long("24")),
        (5401, 5400, _too_long("1.5")),
        (1801, 1800, _too_long("0.5")),
        (0, HOUR, TOO_SHORT),
        (-1, HOUR, TOO_SHORT),
        (-(2**63), HOUR, TOO_SHORT),
        (INT64_MAX, DAY, _too_long("24")),
        (2**64 + 1, DAY, _too_long("24")),  # no wrap-around into range
        (10**30, DAY, _too_long("24")),
    ],
)
def test_create_timeout(requested: int | None, max_timeout_s: int, expected: object) -> None:
    assert _outcome(lambda: create_timeout(requested, max_timeout_s)) == expected


NOW = 1_000_000.0
STARTED = NOW - 600  # ten minutes in


@pytest.mark.parametrize(
    ("timeout_s", "max_timeout_s", "expected"),
    [
        (60, HOUR, NOW + 60),
        (1, HOUR, NOW + 1),
        (0, HOUR, NOW),  # ends now
        (-5, HOUR, NOW),  # a negative t counts as 0
        (-(2**63), HOUR, NOW),
        (HOUR, HOUR, STARTED + HOUR),  # capped at started_at + maximum
        (HOUR - 600, HOUR, STARTED + HOUR),
        (HOUR - 601, HOUR, NOW + HOUR - 601),
        (INT64_MAX, HOUR, STARTED + HOUR),
        (2**64 + 1, DAY, STARTED + DAY),
    ],
)
def test_set_end_at(timeout_s: int, max_timeout_s: int, expected: float) -> None:
    assert set_end_at(NOW, STARTED, timeout_s, max_timeout_s) == expected


def test_set_end_at_may_shorten_a_later_end() -> None:
    assert set_end_at(NOW, STARTED, 10, HOUR) == NOW + 10 < NOW + 1000


@pytest.mark.parametrize(
    ("end_at", "timeout_s", "max_timeout_s", "expected"),
    [
        (NOW + 10, 60, HOUR, NOW + 60),  # lengthens
        (NOW + 1000, 60, HOUR, NOW + 1000),  # never shortens
        (NOW + 10, None, HOUR, NOW + DEFAULT_TIMEOUT_S),  # absent: the default
        (NOW + 1000, None, HOUR, NOW + 1000),
        (NOW + 10, 0, HOUR, NOW + 10),
        (NOW - 10, 0, HOUR, NOW),  # an ended time moves up to now
        (NOW + 10, -60, HOUR, NOW + 10),  # a negative t counts as 0
        (NOW + 10, HOUR, HOUR, STARTED + HOUR),  # capped at started_at + maximum
        (STARTED + HOUR + 50, 60, HOUR, STARTED + HOUR + 50),  # the cap never shortens
        (NOW + 10, HOUR + 1, HOUR, _too_long("1")),  # beyond the maximum: refused
        (NOW + 10, INT64_MAX, DAY, _too_long("24")),
        (NOW + 10, None, 100, NOW + 10),  # a cap already past leaves end_at as it is
    ],
)
def test_extend_end_at(
    end_at: float, timeout_s: int | None, max_timeout_s: int, expected: object
) -> None:
    outcome = _outcome(lambda: extend_end_at(NOW, STARTED, end_at, timeout_s, max_timeout_s))
    assert outcome == expected
