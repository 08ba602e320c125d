"""E2B's sandbox timeout rules (notes §8), as pure functions of times in unix seconds.

- Create: timeout <= 0 is refused, above the maximum length too; absent means 300 s.
- SetSandboxTimeout: end_at = now + t, shorter or longer, capped at started_at + maximum;
  a negative t counts as 0.
- Connect/Refresh: end_at only grows, to now + t, still capped at started_at + maximum.
"""

from __future__ import annotations

from extproc.core.errors import InvalidArgument

DEFAULT_TIMEOUT_S = 300


def _hours(seconds: int) -> str:
    hours = seconds / 3600
    return f"{hours:g}"


def create_timeout(requested: int | None, max_timeout_s: int) -> int:
    """The timeout to create with, in seconds; raise InvalidArgument when out of range."""
    if requested is None:
        return min(DEFAULT_TIMEOUT_S, max_timeout_s)
    if requested <= 0:
        raise InvalidArgument("Timeout must be greater than 0")
    if requested > max_timeout_s:
        raise InvalidArgument(f"Timeout cannot be greater than {_hours(max_timeout_s)} hours")
    return requested


def set_end_at(now: float, started_at: float, timeout_s: int, max_timeout_s: int) -> float:
    """end_at after SetSandboxTimeout: may shorten or lengthen."""
    return min(now + max(timeout_s, 0), started_at + max_timeout_s)


def extend_end_at(
    now: float, started_at: float, end_at: float, timeout_s: int | None, max_timeout_s: int
) -> float:
    """end_at after Connect or Refresh: never earlier than it was."""
    if timeout_s is not None and timeout_s > max_timeout_s:
        raise InvalidArgument(f"Timeout cannot be greater than {_hours(max_timeout_s)} hours")
    wanted = now + (DEFAULT_TIMEOUT_S if timeout_s is None else max(timeout_s, 0))
    return max(end_at, min(wanted, started_at + max_timeout_s))
